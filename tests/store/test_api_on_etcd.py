"""The REST API over a real etcd: two agents (fake resources) stepped in real time, node1
serving the API on 127.0.0.1 (ephemeral port) with its own EtcdStore client."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clusterctl.agent.api import Api, ApiServer
from clusterctl.agent.config import AgentConfig, GroupSpec, ResourceSpec
from clusterctl.agent.ha import Agent
from clusterctl.agent.resources.runner import CommandResult
from clusterctl.agent.store.etcd import EtcdStore

from .test_agent_on_etcd import Units

TOKEN = "etcd-test-token"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
GROUP = GroupSpec(
    "web",
    (
        ResourceSpec("vip", "vip", {"address": "10.0.0.100", "prefix": 24, "interface": "eth0"}),
        ResourceSpec("svc", "systemd", {"unit": "svc.service"}),
    ),
)


class FakeHost(Units):
    """Units plus a VIP (``ip addr``) for the vip resource."""

    def __init__(self) -> None:
        super().__init__()
        self.vip = False

    def run(self, argv, timeout: float) -> CommandResult:
        if argv[0] == "ip":
            if argv[1] == "-o":
                out = "2: eth0    inet 10.0.0.100/24 scope global eth0\n" if self.vip else ""
                return CommandResult(0, out)
            self.vip = argv[2] == "add"
            return CommandResult(0)
        return super().run(argv, timeout)

    def set_address(self, interface, cidr, lifetime, timeout: float) -> CommandResult:
        return self.run(["ip", "addr", "add", cidr, "dev", interface], timeout)

    def address_owner(self, interface: str, address: str) -> str | None:
        return None  # no other host on this fake link


class Cluster:
    def __init__(self, etcd_url: str, url: str, agents: dict[str, Agent], hosts: dict) -> None:
        self.etcd_url = etcd_url
        self.url = url
        self.agents = agents
        self.hosts = hosts

    def step(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            for agent in self.agents.values():
                agent.step()
            assert sum(h.active for h in self.hosts.values()) <= 1
            if until and until():
                return
            time.sleep(0.05)
        if until:
            pytest.fail(f"condition not met within {seconds} s")

    def holder(self) -> str:
        (node,) = [n for n, h in self.hosts.items() if h.active and h.vip]
        return node

    def call(self, method: str, path: str, body: Any = None, token: str = TOKEN):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data, {"Authorization": f"Bearer {token}"}, method=method
        )
        try:
            with OPENER.open(request, timeout=5) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            payload, status = exc.read(), exc.code
        return status, (payload.decode() if path == "/metrics" else json.loads(payload))


@pytest.fixture
def cluster(etcd_url: str) -> Iterator[Cluster]:
    name = f"t{uuid.uuid4().hex[:8]}"
    agents, hosts = {}, {}
    for node in ("node1", "node2"):
        config = AgentConfig(
            node=node,
            cluster=name,
            address=f"10.0.0.{node[-1]}",
            etcd_endpoints=(etcd_url,),
            groups=(GROUP,),
        ).validate()
        hosts[node] = FakeHost()
        agents[node] = Agent(
            config, EtcdStore([etcd_url], 0.5), runner=hosts[node], arp_sender=lambda i, a: None
        )
    api = Api(agents["node1"], TOKEN, EtcdStore([etcd_url], 0.5))
    with ApiServer(api, "127.0.0.1", 0) as server:
        c = Cluster(etcd_url, server.url, agents, hosts)
        c.step(1.0)
        try:
            yield c
        finally:
            for agent in agents.values():
                agent.shutdown()


def test_api_on_real_etcd(cluster: Cluster) -> None:
    c = cluster
    assert c.call("GET", "/v1/status", token="wrong") == (
        401,
        {"error": "missing or invalid bearer token"},
    )
    old = c.holder()
    new = "node2" if old == "node1" else "node1"
    status, body = c.call("GET", "/v1/status")
    assert status == 200 and body["quorum"] is True
    assert body["members"] == [
        {"name": "node1", "address": "10.0.0.1", "online": True, "standby": False},
        {"name": "node2", "address": "10.0.0.2", "online": True, "standby": False},
    ]
    (group,) = body["groups"]
    assert (group["name"], group["vip"], group["node"], group["state"]) == (
        "web",
        "10.0.0.100",
        old,
        "started",
    )
    assert c.call("GET", "/v1/health")[1]["healthy"] is True

    # Move to the other node.
    status, body = c.call("POST", "/v1/groups/web/move", {"to": new})
    assert status == 202 and (body["from"], body["to"]) == (old, new)
    c.step(3.0, until=lambda: c.hosts[new].active and not c.hosts[old].active)
    c.step(0.3)
    assert c.call("GET", "/v1/status")[1]["groups"][0]["node"] == new

    # Ban the holder: the group comes back; clear the ban.
    status, body = c.call("POST", "/v1/groups/web/ban", {"node": new})
    assert status == 200 and body["bans"] == [new]
    c.step(3.0, until=lambda: c.hosts[old].active)
    assert c.call("POST", "/v1/groups/web/clear")[1]["sentence"] == (
        f"cleared bans ({new}) and no pending move of web"
    )

    # Fail counts are reset by cleanup.
    c.agents[new].store.put(c.agents[new].keys.failcount("web", new), "2")
    assert c.call("GET", "/v1/status")[1]["groups"][0]["failcounts"] == {new: 2}
    assert c.call("POST", "/v1/groups/web/cleanup")[1]["sentence"] == (
        "reset 1 fail count(s) of web"
    )
    assert c.call("GET", "/v1/status")[1]["groups"][0]["failcounts"] == {}

    # Standby of the holder moves the group; unstandby does not pull it back.
    holder = c.holder()
    other = new if holder == old else old
    assert c.call("POST", f"/v1/nodes/{holder}/standby")[0] == 200
    c.step(3.0, until=lambda: c.hosts[other].active)
    members = {m["name"]: m for m in c.call("GET", "/v1/status")[1]["members"]}
    assert members[holder]["standby"] is True
    assert c.call("POST", "/v1/groups/web/move", {"to": holder})[0] == 409
    assert c.call("POST", f"/v1/nodes/{holder}/unstandby")[0] == 200
    c.step(0.5)
    assert c.holder() == other

    # Errors.
    assert c.call("POST", "/v1/groups/nope/move", {"to": None})[0] == 404
    assert c.call("POST", "/v1/groups/web/ban", {"node": "node7"})[0] == 400

    # Metrics of node1.
    status, text = c.call("GET", "/metrics")
    assert status == 200
    lines = text.splitlines()
    assert f'clusterctl_group_holder{{cluster="{c.agents["node1"].config.cluster}",' in text
    assert any(f'holder="{other}"}} 1' in line for line in lines)
    failovers = [line for line in lines if line.startswith("clusterctl_failovers_total{")]
    assert len(failovers) == 1 and not failovers[0].endswith(" 0")
    assert any(line.startswith("clusterctl_quorum{") and line.endswith(" 1") for line in lines)


def test_status_without_quorum_is_503(cluster: Cluster, free_port) -> None:
    dead = EtcdStore([f"http://127.0.0.1:{free_port()}"], 0.2)
    api = Api(cluster.agents["node1"], TOKEN, dead, timeout=0.3)
    with ApiServer(api, "127.0.0.1", 0) as server:
        started = time.monotonic()
        status, body = Cluster(cluster.etcd_url, server.url, {}, {}).call("GET", "/v1/status")
        assert time.monotonic() - started < 2.0
    assert status == 503 and body["error"].startswith("etcd unreachable, no quorum here: ")
