"""The controller's agent-API client against the real API, and what counts as a healthy cluster
by the agents' status (shared by chaos and bench)."""

from __future__ import annotations

import socket

import pytest

from clusterctl.agentclient import AgentApiError, AgentClient, unhealthy
from tests.unit.modules.sim_agent import SimAgentApi


def status(**changes) -> dict:
    base = {
        "quorum": True,
        "members": [{"name": "node1", "online": True}, {"name": "node2", "online": True}],
        "groups": [{"name": "web", "state": "started", "node": "node1"}],
    }
    return {**base, **changes}


def test_a_healthy_cluster_has_no_reason() -> None:
    assert unhealthy(status(), "web") == ""


def test_each_reason_is_named() -> None:
    assert unhealthy(status(quorum=False), "web") == "no quorum"
    offline = [{"name": "node1", "online": True}, {"name": "node2", "online": False}]
    assert unhealthy(status(members=offline), "web") == "offline: node2"
    assert unhealthy(status(groups=[{"name": "web", "state": "stopped"}]), "web") == (
        "group web is stopped"
    )
    assert unhealthy(status(), "db") == "group db is missing"


# --- the controller's client over the one shared client, against the real API ---------------


def _client(agent, **kwargs) -> AgentClient:
    host, port = agent.url.removeprefix("http://").split(":")
    return AgentClient([host], agent.token, port=int(port), **kwargs)


def test_the_controller_reads_and_moves_through_the_real_api() -> None:
    with SimAgentApi() as agent:
        client = _client(agent)
        assert unhealthy(client.status(), "web") == ""
        client.move("web", "node2")
        agent.wait(lambda: agent.group()["node"] == "node2")
        assert agent.writes() == [("POST", "/v1/groups/web/move", {"to": "node2"})]


def test_an_error_is_the_apis_own_line_with_its_status() -> None:
    with SimAgentApi() as agent:
        client = _client(agent)
        with pytest.raises(AgentApiError) as unknown:
            client.move("web", "node9")
        assert unknown.value.status == 400
        assert "node9" in str(unknown.value) and "HTTP" not in str(unknown.value)
        with pytest.raises(AgentApiError) as wrong:  # a path segment is quoted, not spliced
            client.move("web/../x", None)
        assert wrong.value.status == 404 and agent.group()["node"] == "node1"
        with pytest.raises(AgentApiError) as denied:
            AgentClient(_client(agent).addresses, "wrong", port=_client(agent).port).status()
        assert denied.value.status == 401 and "token" in denied.value.hint


def test_no_node_answering_says_so_with_a_hint(closed_port: int) -> None:
    client = AgentClient(["127.0.0.1"], "t", port=closed_port, timeout=0.5)
    with pytest.raises(AgentApiError) as none:
        client.status()
    assert none.value.status == 503
    assert str(none.value).startswith("no agent answered (http://127.0.0.1:")
    assert "quorum" in none.value.hint


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
