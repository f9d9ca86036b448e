import json

from clusterctl.status import ClusterStatus, GroupStatus, NodeStatus


def sample() -> ClusterStatus:
    return ClusterStatus(
        cluster="demo",
        provider="podman",
        quorum=False,
        profile="web",
        nodes=[
            NodeStatus("node1", "10.0.0.11", True, True, True, "node1"),
            NodeStatus("node2", "10.0.0.12", False, False, False, error="timed out"),
        ],
    )


def test_json_has_the_documented_fields():
    data = json.loads(sample().to_json())
    assert set(data) >= {"cluster", "quorum", "nodes", "groups", "backends"}
    assert set(data["nodes"][0]) >= {"name", "address", "online", "etcd"}
    assert data["groups"] == [] and data["backends"] == []


def test_table_shows_each_node():
    table = sample().to_table()
    rows = [line.split() for line in table.splitlines()[1:]]
    assert rows[0] == ["NODE", "ADDRESS", "ONLINE", "SSH", "WEB", "ETCD", "NOTE"]
    assert rows[1] == ["node1", "10.0.0.11", "yes", "ok", "ok", "-", "node1"]
    assert rows[2] == ["node2", "10.0.0.12", "no", "down", "down", "-", "timed", "out"]


def test_header_names_the_lb_engine_and_lease():
    lb = ClusterStatus("demo", "podman", True, profile="lb", lb_engine="haproxy", lease_ttl=2)
    assert lb.to_table().splitlines()[0] == (
        "cluster demo (podman, profile lb, engine haproxy, lease 2 s), quorum: yes"
    )
    assert json.loads(lb.to_json())["lease_ttl"] == 2
    assert sample().to_table().splitlines()[0] == "cluster demo (podman, profile web)"


def test_a_groups_state_carries_its_holders_notes():
    vm = GroupStatus("vm", "10.0.0.100", "node2", "started", notes={"demo-vm": "running"})
    status = ClusterStatus("demo", "podman", True, profile="vm", lease_ttl=1, groups=[vm])
    row = next(line for line in status.to_table().splitlines() if line.startswith("vm "))
    assert row.split()[:5] == ["vm", "10.0.0.100", "node2", "started", "(demo-vm:"]
    assert "(demo-vm: running)" in row
    assert json.loads(status.to_json())["groups"][0]["notes"] == {"demo-vm": "running"}
    assert GroupStatus("web", "", "node1", "started").state_text == "started"


def test_wrk_output_is_parsed():
    from clusterctl.bench.lb import parse_wrk

    text = """Running 8s test @ http://10.0.0.100/
  2 threads and 64 connections
  Latency Distribution
     50%  800.00us
     75%    1.10ms
     90%    1.60ms
     99%    4.20ms
  458000 requests in 8.00s, 120.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  57250.12
Transfer/sec:     15.00MB
"""
    assert parse_wrk(text) == (57250.12, 4.2, 3)


def test_status_asks_only_online_holders_for_their_notes(monkeypatch, tmp_path):
    """A holder the agents no longer see online is not asked (`status` would wait for an
    agent that answers nothing); an online one is, with a short timeout."""
    from clusterctl import cluster
    from clusterctl.state import ClusterRecord, NodeRecord, StateDir

    asked: list[tuple[str | None, float]] = []

    class FakeClient:
        def __init__(self, node: str | None) -> None:
            self.node = node

        def request(self, method: str, path: str) -> dict:
            assert (method, path) == ("GET", "/v1/health")
            return {"notes": {f"g-{self.node}": {"vm": "running"}}}

    def fake_agent_client(state, record, node=None, timeout=3.0):
        asked.append((node, timeout))
        return FakeClient(node)

    monkeypatch.setattr(cluster, "agent_client", fake_agent_client)
    record = ClusterRecord(
        "c", "podman", nodes=[NodeRecord(f"node{i}", f"10.0.0.{i}") for i in (1, 2, 3)]
    )
    view = {
        "groups": [{"name": "a", "node": "node1"}, {"name": "b", "node": "node2"}],
        "members": [{"name": "node1", "online": True}, {"name": "node2", "online": False}],
    }
    notes = cluster._holders_notes(StateDir("c", tmp_path), record, view)
    assert asked == [("node1", 1.0)]
    assert notes == {"g-node1": {"vm": "running"}}
