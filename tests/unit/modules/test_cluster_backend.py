"""cluster_backend against the FAKE agent API (see fake_agent.py)."""

from __future__ import annotations

from tests.unit.modules.conftest import api_args

M = "cluster_backend"


def test_already_in_wanted_state_is_a_no_op(fake, run_module):
    result, _ = run_module(M, api_args(fake, node="node2", weight=100), diff=True)
    assert result["changed"] is False, result
    assert result["node"] == "node2"
    assert result["backend"] == {
        "address": "10.0.0.12",
        "port": 8080,
        "weight": 100,
        "state": "active",
        "health": "up",
        "active_connections": 0,
    }
    assert result["diff"]["before"] == result["diff"]["after"]
    assert fake.writes() == []


def test_weight_change_sends_only_the_weight(fake, run_module):
    result, _ = run_module(M, api_args(fake, node="node2", weight=50))
    assert result["changed"] is True, result
    assert result["backend"]["weight"] == 50 and result["backend"]["state"] == "active"
    assert fake.writes() == [("POST", "/v1/backends/node2", {"weight": 50})]
    again, _ = run_module(M, api_args(fake, node="node2", weight=50))
    assert again["changed"] is False
    assert len(fake.writes()) == 1


def test_drained_waits_until_no_connection(fake, run_module):
    fake.lb["backends"]["node2"]["active_connections"] = 3
    result, _ = run_module(M, api_args(fake, node="node2", state="drained"))
    assert result["changed"] is True, result
    assert result["backend"]["state"] == "draining"
    assert result["backend"]["active_connections"] == 0
    assert fake.writes() == [("POST", "/v1/backends/node2", {"state": "draining"})]
    # One read before the write, then polls until the counter (lowered per read) reached 0.
    assert fake.backend_reads() >= 4
    again, _ = run_module(M, api_args(fake, node="node2", state="drained"))
    assert again["changed"] is False
    assert len(fake.writes()) == 1


def test_drained_timeout_fails_naming_the_count(fake, run_module):
    fake.lb["backends"]["node2"]["active_connections"] = 7
    fake.drain_per_read = 0
    args = api_args(fake, node="node2", state="drained", drain_timeout=0.6)
    result, _ = run_module(M, args)
    assert result["failed"] is True
    assert "not drained within 0.6 s" in result["msg"]
    assert "7 active connection(s)" in result["msg"]
    assert result["active_connections"] == 7
    # wait=false does not wait.
    nowait, _ = run_module(M, dict(args, wait=False))
    assert nowait["changed"] is False and nowait["backend"]["active_connections"] == 7


def test_check_mode_reports_change_without_writing(fake, run_module):
    fake.lb["backends"]["node3"]["active_connections"] = 5
    for state in ("disabled", "drained", "absent"):
        args = api_args(fake, node="node3", state=state, weight=10)
        result, _ = run_module(M, args, check=True, diff=True)
        assert result["changed"] is True, (state, result)
    assert result["backend"] is None and result["diff"]["after"] == {}
    assert fake.writes() == []
    assert fake.backend("node3")["state"] == "active"
    assert fake.backend("node3")["weight"] == 100


def test_diff_shows_weight_and_state_before_and_after(fake, run_module):
    args = api_args(fake, node="node1", state="disabled", weight=0)
    result, _ = run_module(M, args, diff=True)
    assert result["changed"] is True
    assert result["diff"] == {
        "before": {"weight": 100, "state": "active"},
        "after": {"weight": 0, "state": "disabled"},
    }
    assert fake.writes() == [("POST", "/v1/backends/node1", {"weight": 0, "state": "disabled"})]
    back, _ = run_module(M, api_args(fake, node="node1", weight=100), diff=True)
    assert back["diff"]["after"] == {"weight": 100, "state": "active"}


def test_absent_is_idempotent(fake, run_module):
    args = api_args(fake, node="node3", state="absent")
    first, _ = run_module(M, args, diff=True)
    second, _ = run_module(M, args, diff=True)
    assert (first["changed"], second["changed"]) == (True, False)
    assert first["diff"] == {"before": {"weight": 100, "state": "active"}, "after": {}}
    assert first["backend"] is None
    assert fake.writes() == [("DELETE", "/v1/backends/node3", None)]
    assert fake.backend("node3") is None


def test_invalid_weight_fails_before_any_request(fake, run_module):
    for weight in (257, -1):
        result, _ = run_module(M, api_args(fake, node="node2", weight=weight))
        assert result["failed"] is True
        assert f"weight must be between 0 and 256, got {weight}" in result["msg"]
    assert fake.requests == []


def test_unknown_node_fails_clearly(fake, run_module):
    for state in ("present", "drained", "disabled"):
        result, _ = run_module(M, api_args(fake, node="node9", state=state))
        assert result["failed"] is True
        assert "'node9' is not a registered backend" in result["msg"], result["msg"]
        assert "node1, node2, node3" in result["msg"]
    assert fake.writes() == []


def test_404_on_write_fails_with_msg(fake, run_module, monkeypatch):
    """The backend vanishes between the read and the write: the API's 404 is reported."""
    original = fake._route_backends

    def vanish(method, rest, body):
        if method == "POST":
            fake.lb["backends"].pop(rest[0], None)
        return original(method, rest, body)

    monkeypatch.setattr(fake, "_route_backends", vanish)
    result, _ = run_module(M, api_args(fake, node="node2", weight=5))
    assert result["failed"] is True and result["status"] == 404
    assert "'node2' is not a registered backend" in result["msg"]
    assert "no such backend: node2" in result["msg"]


def test_no_load_balancer_fails_clearly(fake, run_module):
    fake.lb = None
    result, _ = run_module(M, api_args(fake, node="node2", state="absent"))
    assert result["failed"] is True and result["status"] == 404
    assert "no group has a load balancer" in result["msg"]
    assert fake.writes() == []
