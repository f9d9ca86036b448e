"""LB backends from the controller: drain, undrain, weight (through the agents' API)."""

from __future__ import annotations

import time

from clusterctl.agent.apiclient import MAX_BACKEND_WEIGHT
from clusterctl.cluster import agent_client
from clusterctl.errors import ClusterctlError
from clusterctl.reporter import Reporter
from clusterctl.state import StateDir


def _client(cluster: str, node: str):
    state = StateDir(cluster)
    record = state.load()
    if record.profile != "lb":
        raise ClusterctlError(
            f"cluster {cluster!r} runs profile {record.profile}, which has no load balancer",
            "create one with `clusterctl up --profile lb`",
        )
    record.require_node(node)
    return agent_client(state, record)


def _row(client, node: str) -> dict:
    for row in client.backends().get("backends", []):
        if row["node"] == node:
            return row
    raise ClusterctlError(f"{node} is not a registered backend", "see `clusterctl status`")


def drain(cluster: str, node: str, reporter: Reporter, timeout: float = 60.0) -> dict:
    """Stop new connections to `node`'s backend, then wait until its active ones are gone."""
    client = _client(cluster, node)
    _row(client, node)
    client.set_backend(node, state="draining")
    started = time.monotonic()
    deadline = started + timeout
    while True:
        row = _row(client, node)
        active = row.get("active_connections")
        if active == 0:
            break
        if time.monotonic() >= deadline:
            raise ClusterctlError(
                f"{node} still has {active} active connection(s) after {timeout:.0f} s; "
                "it gets no new ones",
                "wait and run drain again, or raise --timeout",
            )
        reporter.progress(f"draining {node}: {active if active is not None else '?'} active")
        time.sleep(0.25)
    return {"node": node, "state": "draining", "drained": True,
            "seconds": round(time.monotonic() - started, 2)}  # fmt: skip


def undrain(cluster: str, node: str) -> dict:
    client = _client(cluster, node)
    return client.set_backend(node, state="active")


def set_weight(cluster: str, node: str, weight: int) -> dict:
    if not 0 <= weight <= MAX_BACKEND_WEIGHT:
        raise ClusterctlError(
            f"weight {weight} is out of range",
            f"use 0..{MAX_BACKEND_WEIGHT} (0 takes no new connections)",
        )
    return _client(cluster, node).set_backend(node, weight=weight)
