"""`clusterctl token rotate`: replace the agents' API token everywhere, without an outage.

Three steps, each a short playbook run (playbooks/token.yml) that only rewrites the nodes'
token file and makes the agents re-read it (SIGHUP; no agent restarts, no group moves):

1. the nodes accept the current token and the new one (the CLI still sends the current);
2. the CLI switches to the new one (the nodes still accept both);
3. the nodes accept only the new one; the old one is checked to be refused everywhere.

Interrupted, it leaves a state every node and the CLI agree on; running it again starts a
fresh rotation from the token in use.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from clusterctl import cluster as api
from clusterctl.agentclient import AgentApiError, AgentClient
from clusterctl.errors import ClusterctlError
from clusterctl.profiles import AGENT_PROFILES
from clusterctl.reporter import Reporter
from clusterctl.state import StateDir, read_token, write_private


def rotate_token(cluster: str, reporter: Reporter) -> dict:
    state = StateDir(cluster)
    record = state.load()
    if record.profile not in AGENT_PROFILES:
        raise ClusterctlError(
            f"cluster {cluster!r} runs profile {record.profile}, which has no agents",
            "only the ha and lb profiles have an API token",
        )
    if api.needs_tls_upgrade(record):
        raise ClusterctlError(
            f"cluster {cluster!r} still runs its agents over plain HTTP",
            f"upgrade it first with `clusterctl up --cluster {cluster}`",
        )
    provider = api.provider_for_record(state, reporter, record)
    old = read_token(state.api_token)
    new = secrets.token_urlsafe(32)
    nodes = len(record.nodes)

    def step(tokens: list[str], what: str, check: Callable[[], None]) -> None:
        reporter.progress(what)
        write_private(state.api_token, "\n".join(tokens) + "\n")
        api.run_cluster_playbook("token.yml", state, provider, record, reporter, nodes)
        check()

    step([old, new], "1/3: every agent accepts the new token too", lambda: _accepted(state, new))
    step([new, old], "2/3: clusterctl sends the new token", lambda: None)
    step([new], "3/3: the old token is refused", lambda: _refused(state, old))
    return {"cluster": cluster, "rotated": True, "nodes": [n.name for n in record.nodes]}


def _clients(state: StateDir, token: str) -> list[tuple[str, AgentClient]]:
    record = state.load()
    base = api.agent_client(state, record)
    return [(n.name, AgentClient([n.address], token, tls=base.tls)) for n in record.nodes]


def _accepted(state: StateDir, token: str) -> None:
    for node, client in _clients(state, token):
        try:
            client.request("GET", "/v1/health")
        except AgentApiError as exc:
            # unconfirmed is not good enough: step 2 would lock clusterctl out of that node
            raise ClusterctlError(
                f"the agent on {node} did not confirm the new token: {exc.message}",
                "fix that node, then run `clusterctl token rotate` again (it starts over)",
            ) from None


def _refused(state: StateDir, token: str) -> None:
    for node, client in _clients(state, token):
        try:
            client.request("GET", "/v1/health")
        except AgentApiError as exc:
            if exc.status == 401:
                continue
            raise ClusterctlError(
                f"could not check that {node} refuses the old token: {exc.message}",
                "see `clusterctl status`",
            ) from None
        raise ClusterctlError(
            f"the agent on {node} still accepts the old token",
            "run `clusterctl token rotate` again",
        )
