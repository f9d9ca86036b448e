"""The backend endpoints of the API, over simulated agents that registered themselves."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from clusterctl.agent.api import Api, ApiServer
from clusterctl.agent.store.memory import MemoryStore

from .agentsim import Sim
from .test_api import TOKEN, Client


@pytest.fixture
def lb_cluster() -> Iterator[tuple[Sim, Client]]:
    sim = Sim(settings={"backend": {"address": "10.0.0.11", "port": 80, "weight": 1}})
    sim.run(1.0)
    api = Api(sim.agents["node1"], TOKEN, MemoryStore(sim.backend, "api"))
    server = ApiServer(api, "127.0.0.1", 0).start()
    try:
        yield sim, Client(server.url)
    finally:
        server.stop()


def stored(sim: Sim, node: str) -> dict:
    return json.loads(sim.admin.get(sim.keys.backend(node)))


def test_weight_and_state_change_and_report_changed(lb_cluster) -> None:
    sim, client = lb_cluster
    code, body = client.post("/v1/backends/node2", {"weight": 5, "state": "draining"})
    assert code == 200 and body["changed"] is True and body["weight"] == 5
    assert stored(sim, "node2")["state"] == "draining"
    code, body = client.post("/v1/backends/node2", {"weight": 5})
    assert code == 200 and body["changed"] is False


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"weight": 999}, "weight"),
        ({"state": "sleeping"}, "state"),
        ({"colour": "red"}, "unknown field"),
        ({}, "give weight and/or state"),
    ],
)
def test_invalid_input_changes_nothing(lb_cluster, body, words) -> None:
    sim, client = lb_cluster
    before = stored(sim, "node3")
    code, answer = client.post("/v1/backends/node3", body)
    assert code == 400 and words in answer["error"]
    assert stored(sim, "node3") == before


def test_unknown_backend_is_404_and_delete_is_idempotent(lb_cluster) -> None:
    sim, client = lb_cluster
    assert client.post("/v1/backends/node9", {"weight": 2})[0] == 404
    assert client.call("DELETE", "/v1/backends/node3") == (200, {"node": "node3", "changed": True})
    assert client.call("DELETE", "/v1/backends/node3")[1]["changed"] is False
    assert sim.admin.get(sim.keys.backend("node3")) is None


def test_list_needs_a_load_balancer_group(lb_cluster) -> None:
    _, client = lb_cluster
    code, body = client.get("/v1/backends")
    assert code == 404 and "no group has a load balancer" in body["error"]
    code, body = client.get("/v1/backends?local=1")
    assert code == 200 and body == {"node": "node1", "backends": []}


def test_engine_comes_from_the_running_config_not_the_first_published_spec() -> None:
    from types import SimpleNamespace

    from clusterctl.agent.api_backends import lb_group
    from clusterctl.agent.config import GroupSpec, ResourceSpec

    def group(engine: str) -> GroupSpec:
        params = {"address": "10.0.0.100", "port": 80, "backend_port": 80, "engine": engine}
        return GroupSpec(name="web", resources=(ResourceSpec("lb", "lb", params),))

    # etcd's spec key was published while the engine was nft; the agents now run haproxy.
    view = SimpleNamespace(groups={"web": SimpleNamespace(leader="node2")})
    state = SimpleNamespace(specs={"web": group("nft")}, view=view)
    api = SimpleNamespace(
        _read=lambda: state,
        agent=SimpleNamespace(groups={"web": SimpleNamespace(spec=group("haproxy"))}),
    )
    assert lb_group(api) == ("web", "node2", "haproxy")
    api.agent.groups = {}  # an agent without the group: the published spec is all it knows
    assert lb_group(api) == ("web", "node2", "nft")
