"""The API's LB backend endpoints (docs/agent-api.md, "Backends").

The registry is ``backends/<node>`` in etcd, so any node reads and changes it. Health and
active connections are known only where the load balancer runs (the group's holder): another
node asks the holder's API for them and answers ``unknown`` if it cannot reach it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from clusterctl.agent import apiclient
from clusterctl.agent.config import ConfigError
from clusterctl.agent.lb.model import Backend

if TYPE_CHECKING:
    from clusterctl.agent.api import Api, Reply

FORWARD_TIMEOUT = 1.0


def lb_group(api: Api) -> tuple[str, str | None, str]:
    """(group, holder, engine) of the first group with an ``lb`` resource."""
    from clusterctl.agent.api import ApiError

    state = api._read()
    for name, spec in state.specs.items():
        for res in spec.resources:
            if res.type == "lb":
                gv = state.view.groups.get(name)
                # The spec key holds the resources the agents last published at their start;
                # the agents run their own config's resources (after `clusterctl up
                # --lb-engine haproxy` the key once still said nft): report those.
                params = _local_lb_params(api, name) or res.params
                return name, gv.leader if gv else None, str(params.get("engine", "nft"))
    raise ApiError(404, "no group has a load balancer (profile lb)")


def _local_lb_params(api: Api, group: str) -> dict[str, Any] | None:
    """The params of the ``lb`` resource of ``group`` in this agent's own config, if any."""
    local = api.agent.groups.get(group)
    for res in local.spec.resources if local is not None else ():
        if res.type == "lb":
            return dict(res.params)
    return None


def list_backends(api: Api, local_only: bool) -> Reply:
    from clusterctl.agent.api import _json_reply

    stats = {s.node: asdict(s) for s in api.agent.lb_stats()}
    if local_only:
        return _json_reply(200, {"node": api.agent.node, "backends": list(stats.values())})
    group, holder, engine = lb_group(api)
    state = api._read()
    if holder and holder != api.agent.node and not stats:
        stats = _ask_holder(api, holder, state.view.members.get(holder))
    rows = []
    for node, backend in sorted(state.view.backends.items()):
        live = stats.get(node, {})
        rows.append(
            {
                "node": node,
                "address": backend.address,
                "port": backend.port,
                "weight": backend.weight,
                "state": backend.state,
                "health": live.get("health", "unknown"),
                "active_connections": live.get("active_connections"),
                "in_rotation": live.get("in_rotation"),
            }
        )
    body = {"group": group, "holder": holder, "engine": engine, "backends": rows}
    return _json_reply(200, body)


def _ask_holder(api: Api, holder: str, member: Any) -> dict[str, dict]:
    """The holder's live view of its backends. The holder's address comes from its member
    key in etcd: it is used only if it is a plain IP address (never a host name, a port or a
    path an attacker could smuggle the token to), over TLS with the cluster's CA when set."""
    address = getattr(member, "address", "") if member is not None else ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return {}
    port = api.agent.config.api_port
    url = apiclient.base_urls([str(ip)], port, tls=api.client_tls is not None)
    client = apiclient.AgentApi(url, api.token.decode(), FORWARD_TIMEOUT, api.client_tls)
    try:
        return {row["node"]: row for row in client.backends(local=True).get("backends", [])}
    except (apiclient.AgentApiError, KeyError, TypeError, AttributeError):
        return {}


def update_backend(api: Api, node: str, data: dict[str, Any]) -> Reply:
    """Change a backend's weight and/or state (compare-and-put: concurrent edits are safe)."""
    from clusterctl.agent.api import ApiError, _json_reply

    unknown = sorted(set(data) - {"weight", "state"})
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
    if not data:
        raise ApiError(400, "give weight and/or state")
    key = api.keys.backend(node)
    for _ in range(10):
        text = api.store.get(key, timeout=api.timeout)
        if text is None:
            raise ApiError(404, f"no such backend: {node}")
        current = Backend.from_json(node, text)
        wanted = Backend(
            node,
            current.address,
            current.port,
            data.get("weight", current.weight),
            data.get("state", current.state),
        )
        try:
            wanted.validate()
        except ConfigError as exc:
            raise ApiError(400, f"{exc.rule}: {exc.detail}") from None
        if wanted == current:
            return _json_reply(200, {**_public(wanted), "changed": False})
        if api.store.compare_and_put(key, text, wanted.to_json(), timeout=api.timeout):
            change = (
                f"{node}: weight {current.weight} -> {wanted.weight}, "
                f"state {current.state} -> {wanted.state}"
            )
            api.agent.history.record("backend-changed", reason=change)
            return _json_reply(200, {**_public(wanted), "changed": True})
    raise ApiError(409, f"backend {node} kept changing; try again")


def delete_backend(api: Api, node: str) -> Reply:
    from clusterctl.agent.api import _json_reply

    key = api.keys.backend(node)
    existed = api.store.get(key, timeout=api.timeout) is not None
    if existed:
        api.store.delete(key, timeout=api.timeout)
        api.agent.history.record("backend-changed", reason=f"{node}: removed")
    return _json_reply(200, {"node": node, "changed": existed})


def _public(backend: Backend) -> dict[str, Any]:
    return {
        "node": backend.node,
        "address": backend.address,
        "port": backend.port,
        "weight": backend.weight,
        "state": backend.state,
    }
