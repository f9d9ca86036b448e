"""The REST API (docs/agent-api.md): a real HTTP server on 127.0.0.1 (ephemeral port) over
the simulated cluster (in-memory store, fake clock, fake nodes)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from clusterctl.agent import admin
from clusterctl.agent.api import Api, ApiServer
from clusterctl.agent.store.memory import MemoryStore

from .agentsim import Sim
from .test_metrics import parse, value

TOKEN = "t0ken-for-tests"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Client:
    def __init__(self, url: str) -> None:
        self.url = url

    def raw(
        self, method: str, path: str, data: bytes | None = None, token: str | None = TOKEN
    ) -> tuple[int, str, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with _OPENER.open(request, timeout=5) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read()

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        status, ctype, payload = self.raw(method, path, data, **kw)
        assert ctype == "application/json", (status, payload)
        return status, json.loads(payload)

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.call("POST", path, body, **kw)

    def status(self) -> dict[str, Any]:
        code, body = self.get("/v1/status")
        assert code == 200, body
        return body


@pytest.fixture
def cluster() -> Iterator[tuple[Sim, Client, Api]]:
    """Three simulated agents; node1 serves the API with a store client of its own."""
    sim = Sim()
    sim.run(1.0)
    api = Api(sim.agents["node1"], TOKEN, MemoryStore(sim.backend, "api"))
    server = ApiServer(api, "127.0.0.1", 0).start()
    try:
        yield sim, Client(server.url), api
    finally:
        server.stop()
    assert not any(t.name == "clusterctl-api" for t in threading.enumerate())


def holder(sim: Sim) -> str:
    (node,) = sim.vip_on()
    return node


def test_requests_need_the_bearer_token(cluster) -> None:
    sim, client, _ = cluster
    for path in ("/v1/status", "/v1/health", "/metrics", "/nowhere"):
        for token in (None, "wrong", ""):
            assert client.get(path, token=token) == (
                401,
                {"error": "missing or invalid bearer token"},
            )
    status, _, _ = client.raw("GET", "/v1/status", token=TOKEN.upper())
    assert status == 401
    # Not a bearer scheme at all.
    request = urllib.request.Request(
        client.url + "/v1/status", headers={"Authorization": f"Basic {TOKEN}"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        _OPENER.open(request, timeout=5)
    assert info.value.code == 401 and info.value.headers["WWW-Authenticate"] == "Bearer"
    assert client.post("/v1/groups/web/cleanup", token=None)[0] == 401
    assert sim.keys.failcount("web", "node1") not in sim.backend.dump()


def test_status_answers_for_the_whole_cluster(cluster) -> None:
    sim, client, _ = cluster
    body = client.status()
    assert body["cluster"] == "demo" and body["node"] == "node1" and body["quorum"] is True
    assert body["sentence"] == sim.agents["node1"].snapshot.sentence
    assert body["members"] == [
        {"name": n, "address": "", "online": True, "standby": False} for n in sim.nodes
    ]
    assert body["groups"] == [
        {
            "name": "web",
            "vip": "10.0.0.100",
            "node": holder(sim),
            "state": "started",
            "failcounts": {},
            "bans": [],
            "move": None,
            "migration_threshold": 3,
            "fencing": None,
            "owner": None,
        }
    ]
    sim.crash("node3")
    sim.admin.put(sim.keys.failcount("web", "node3"), "1")
    sim.run(5.0)  # a standby's idle lease lasts 4 s
    members = {m["name"]: m for m in client.status()["members"]}
    assert members["node3"]["online"] is False  # known through its fail count
    (group,) = client.status()["groups"]
    assert group["failcounts"] == {"node3": 1} and group["node"] == holder(sim)


def test_health_from_the_snapshot(cluster) -> None:
    sim, client, _ = cluster
    code, body = client.get("/v1/health")
    assert code == 200
    assert body["node"] == "node1" and body["healthy"] is True and body["lease_valid"] is True
    assert body["sentence"] == sim.agents["node1"].snapshot.sentence
    assert 0 < body["lease_time_left"] <= 0.6
    assert body["notes"] == {}  # nginx and a VIP say nothing beyond "started"
    sim.partition("node1")
    sim.run(1.5)
    code, body = client.get("/v1/health")
    assert code == 503 and body["healthy"] is False
    assert body["sentence"] == "no quorum: store unreachable, standing by"
    sim.heal("node1")
    sim.run(0.5)
    assert client.get("/v1/health")[0] == 200
    sim.clock.advance(6.0)  # the loop does not step for 6 s
    code, body = client.get("/v1/health")
    assert code == 503 and body["sentence"].startswith("loop stalled: no iteration for 6.")
    assert body["lease_valid"] is False and body["lease_time_left"] == 0


def test_move_to_a_node_and_to_any(cluster) -> None:
    sim, client, _ = cluster
    old = holder(sim)
    target = next(n for n in sim.nodes if n != old)
    code, body = client.post("/v1/groups/web/move", {"to": target})
    assert code == 202
    assert body == {
        "group": "web",
        "from": old,
        "to": target,
        "sentence": f"moving web from {old} to {target}",
    }
    (group,) = client.status()["groups"]
    assert group["state"] == "moving" and group["move"] == target
    sim.run_until(lambda: sim.vip_on() == [target], timeout=3.0)
    sim.run(0.3)
    (group,) = client.status()["groups"]
    assert (group["state"], group["node"], group["move"]) == ("started", target, None)
    code, body = client.post("/v1/groups/web/move", {"to": None})
    assert code == 202 and body["from"] == target and body["to"] not in (target, None)
    sim.run_until(lambda: sim.vip_on() == [body["to"]], timeout=3.0)


def test_ban_of_the_holder_moves_the_group_and_unban(cluster) -> None:
    sim, client, _ = cluster
    old = holder(sim)
    code, body = client.post("/v1/groups/web/ban", {"node": old})
    assert code == 200 and body["bans"] == [old]
    assert body["sentence"] == f"banned {old} from web: it holds web, which moves away"
    sim.run(0.5)
    new = holder(sim)
    assert new != old
    assert client.post("/v1/groups/web/ban", {"node": old})[1]["bans"] == [old]  # idempotent
    assert client.status()["groups"][0]["bans"] == [old]
    code, body = client.post("/v1/groups/web/unban", {"node": old})
    assert code == 200 and body["bans"] == [] and body["sentence"] == f"unbanned {old} from web"
    assert client.post("/v1/groups/web/unban", {"node": old})[1]["sentence"] == (
        f"{old} was not banned from web"
    )
    sim.run(1.0)
    assert sim.vip_on() == [new]  # stickiness


def test_clear_removes_bans_and_the_pending_move(cluster) -> None:
    sim, client, _ = cluster
    other = next(n for n in sim.nodes if n != holder(sim))
    assert client.post("/v1/groups/web/ban", {"node": other})[0] == 200
    admin.request_move(sim.admin, sim.keys, "web", "node9")  # on hold: not a member
    (group,) = client.status()["groups"]
    assert group["bans"] == [other] and group["move"] == "node9" and group["state"] == "moving"
    code, body = client.post("/v1/groups/web/clear")
    assert code == 200
    assert body == {
        "group": "web",
        "sentence": f"cleared bans ({other}) and the pending move to node9 of web",
    }
    (group,) = client.status()["groups"]
    assert group["bans"] == [] and group["move"] is None and group["state"] == "started"
    assert client.post("/v1/groups/web/clear", {})[1]["sentence"] == (
        "cleared no bans and no pending move of web"
    )


def test_cleanup_resets_fail_counts(cluster) -> None:
    sim, client, _ = cluster
    node = holder(sim)
    for _ in range(3):  # nginx keeps failing: the group leaves node
        sim.fake[node].units.discard("nginx.service")
        sim.run(1.05)
    assert holder(sim) != node
    (group,) = client.status()["groups"]
    assert group["failcounts"] == {node: 3}
    code, body = client.post("/v1/groups/web/cleanup")
    assert (code, body) == (200, {"group": "web", "sentence": "reset 1 fail count(s) of web"})
    assert client.status()["groups"][0]["failcounts"] == {}
    # node is eligible again: a move there is accepted.
    assert client.post("/v1/groups/web/move", {"to": node})[0] == 202


def test_standby_and_unstandby(cluster) -> None:
    sim, client, _ = cluster
    old = holder(sim)
    code, body = client.post(f"/v1/nodes/{old}/standby")
    assert code == 200 and body["node"] == old and body["standby"] is True
    assert body["sentence"] == f"{old} is in standby: it releases its groups and acquires none"
    sim.run(0.5)
    new = holder(sim)
    assert new != old
    members = {m["name"]: m for m in client.status()["members"]}
    assert members[old]["standby"] is True and members[new]["standby"] is False
    assert client.post("/v1/groups/web/move", {"to": old})[0] == 409
    code, body = client.post(f"/v1/nodes/{old}/unstandby")
    assert code == 200 and body["standby"] is False
    sim.run(1.0)
    assert holder(sim) == new  # no pull-back
    members = {m["name"]: m for m in client.status()["members"]}
    assert members[old]["standby"] is False


def test_input_errors(cluster) -> None:
    sim, client, _ = cluster
    node = holder(sim)
    other = next(n for n in sim.nodes if n != node)
    cases = [
        ("/v1/groups/nope/move", {"to": other}, 404, "no such group: nope"),
        ("/v1/groups/nope/cleanup", None, 404, "no such group: nope"),
        ("/v1/groups/web/ban", {"node": "node9"}, 400, "unknown node: node9"),
        ("/v1/groups/web/move", {"to": "node9"}, 400, "unknown node: node9"),
        ("/v1/groups/web/move", {"to": 3}, 400, "'to' must be a node name or null"),
        ("/v1/groups/web/move", {}, 400, "missing field(s): to"),
        ("/v1/groups/web/move", {"target": other}, 400, "unknown field(s): target"),
        ("/v1/groups/web/ban", ["node1"], 400, "the body must be a JSON object"),
        ("/v1/nodes/node9/standby", None, 400, "unknown node: node9"),
        ("/v1/groups/web/move", {"to": node}, 409, f"web already runs on {node}"),
        ("/v1/nodes/node1/reboot", None, 404, "no such path: /v1/nodes/node1/reboot"),
    ]
    for path, body, code, error in cases:
        got_code, got = client.post(path, body)
        assert got_code == code, (path, got)
        assert got["error"].startswith(error), (path, got)
    status, _, payload = client.raw("POST", "/v1/groups/web/move", b"{not json")
    assert status == 400 and json.loads(payload) == {"error": "the body is not valid JSON"}
    assert client.get("/v1/groups/web/move")[0] == 405
    assert client.post("/v1/status")[0] == 405
    # 409: banned, in standby, not a live member (known only through a fail count).
    client.post("/v1/groups/web/ban", {"node": other})
    code, body = client.post("/v1/groups/web/move", {"to": other})
    assert (
        code == 409 and body["error"] == f"cannot move web to {other}: {other} is banned from web"
    )
    client.post("/v1/groups/web/unban", {"node": other})
    client.post(f"/v1/nodes/{other}/standby")
    code, body = client.post("/v1/groups/web/move", {"to": other})
    assert code == 409 and body["error"] == f"cannot move web to {other}: {other} is in standby"
    sim.admin.put(sim.keys.failcount("web", "node4"), "1")
    assert client.post("/v1/groups/web/move", {"to": "node4"}) == (
        409,
        {"error": "node4 is not a live member"},
    )
    third = next(n for n in sim.nodes if n not in (node, other))
    client.post(f"/v1/nodes/{third}/standby")
    assert client.post("/v1/groups/web/move", {"to": None}) == (
        409,
        {"error": "no other eligible node to move web to"},
    )
    assert sim.keys.move("web") not in sim.backend.dump()  # nothing was written


def test_store_unreachable_and_internal_errors(cluster, caplog) -> None:
    sim, client, api = cluster
    sim.partition("api")
    code, body = client.get("/v1/status")
    assert code == 503 and body["error"].startswith("etcd unreachable, no quorum here: ")
    assert client.post("/v1/groups/web/cleanup")[0] == 503
    assert client.get("/v1/health")[0] == 200  # the loop itself still reaches etcd
    sim.heal("api")

    def boom() -> None:
        raise RuntimeError("bug")

    api.status = boom  # type: ignore[method-assign]
    code, body = client.get("/v1/status")
    assert (code, body) == (500, {"error": "internal error (see the agent's log)"})
    assert "Traceback" in caplog.text  # logged, not answered


def test_metrics_show_holder_and_failovers(cluster) -> None:
    sim, client, _ = cluster
    if holder(sim) != "node1":
        assert client.post("/v1/groups/web/move", {"to": "node1"})[0] == 202
        sim.run_until(lambda: sim.vip_on() == ["node1"], timeout=3.0)
    status, ctype, payload = client.raw("GET", "/metrics")
    assert status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse(payload.decode())
    common = {"cluster": "demo", "node": "node1"}
    assert value(samples, "clusterctl_group_holder", group="web", holder="node1", **common) == 1
    assert value(samples, "clusterctl_group_running", group="web") == 1
    assert value(samples, "clusterctl_failovers_total", group="web") == 1
    assert value(samples, "clusterctl_fencings_total") == 0
    assert value(samples, "clusterctl_members_online") == 3
    assert value(samples, "clusterctl_quorum") == 1
    assert value(samples, "clusterctl_lease_time_left_seconds") > 0
    assert value(samples, "clusterctl_lease_renew_seconds_count") > 0


def test_history_lists_every_nodes_transitions_and_refuses_bad_queries(cluster) -> None:
    from clusterctl.agent.history import FIRST_START, HistoryWriter

    sim, client, api = cluster
    for node, agent in sim.agents.items():
        HistoryWriter(agent.history, MemoryStore(sim.backend, f"w-{node}"), sim.keys).flush()
    code, body = client.get("/v1/history?group=web")
    assert code == 200
    acquired = [e for e in body["entries"] if e["event"] == "acquired"]
    assert [(e["node"], e["group"], e["reason"]) for e in acquired] == [
        (holder(sim), "web", FIRST_START)
    ]
    code, body = client.get("/v1/history?limit=1")
    assert code == 200 and len(body["entries"]) == 1
    for query in ("since=soon", "limit=0", "limit=x", "since=nan", "group=a%0Ab"):
        code, body = client.get(f"/v1/history?{query}")
        assert code == 400, (query, body)
    assert client.post("/v1/history", {})[0] == 405


def test_confirm_fenced_refuses_an_online_node_and_releases_a_dead_owner(cluster) -> None:
    sim, client, _ = cluster
    sim.admin.put(sim.keys.owner("web"), "node3")  # as a fencing group's owner would be
    status, body = client.post("/v1/nodes/node2/confirm-fenced", {})
    assert status == 409 and "online" in body["error"]
    sim.crash("node3")
    sim.run(5.0)  # its (idle, 4 s) lease expired: not online any more
    status, body = client.post("/v1/nodes/node3/confirm-fenced", {})
    assert status == 200, body
    assert body["released"] == ["web"] and "confirmed node3 is off" in body["sentence"]
    assert sim.keys.owner("web") not in sim.backend.dump()
    record = json.loads(sim.backend.dump()[sim.keys.fence("node3")])
    assert (record["by"], record["result"]) == ("operator", "confirmed")
