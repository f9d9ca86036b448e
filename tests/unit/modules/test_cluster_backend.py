"""cluster_backend against the real agent API over a simulated cluster with a load balancer
(sim_agent.py: the registry and the endpoints are real; the live counts are the simulation's)."""

from __future__ import annotations

from tests.unit.modules.conftest import api_args

M = "cluster_backend"


def test_already_in_wanted_state_is_a_no_op(lb_agent, run_module):
    result, _ = run_module(M, api_args(lb_agent, node="node2", weight=100), diff=True)
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
    assert lb_agent.writes() == []


def test_weight_change_sends_only_the_weight(lb_agent, run_module):
    result, _ = run_module(M, api_args(lb_agent, node="node2", weight=50))
    assert result["changed"] is True, result
    assert result["backend"]["weight"] == 50 and result["backend"]["state"] == "active"
    assert lb_agent.writes() == [("POST", "/v1/backends/node2", {"weight": 50})]
    again, _ = run_module(M, api_args(lb_agent, node="node2", weight=50))
    assert again["changed"] is False
    assert len(lb_agent.writes()) == 1


def test_drained_waits_until_no_connection(lb_agent, run_module):
    lb_agent.counts.connections["node2"] = 3
    result, _ = run_module(M, api_args(lb_agent, node="node2", state="drained"))
    assert result["changed"] is True, result
    assert result["backend"]["state"] == "draining"
    assert result["backend"]["active_connections"] == 0
    assert lb_agent.writes() == [("POST", "/v1/backends/node2", {"state": "draining"})]
    # One read before the write, then polls until the counter (lowered per read) reached 0.
    assert lb_agent.backend_reads() >= 4
    again, _ = run_module(M, api_args(lb_agent, node="node2", state="drained"))
    assert again["changed"] is False
    assert len(lb_agent.writes()) == 1


def test_drained_timeout_fails_naming_the_count(lb_agent, run_module):
    lb_agent.counts.connections["node2"] = 7
    lb_agent.counts.drain_per_read = 0
    args = api_args(lb_agent, node="node2", state="drained", drain_timeout=0.6)
    result, _ = run_module(M, args)
    assert result["failed"] is True
    assert "not drained within 0.6 s" in result["msg"]
    assert "7 active connection(s)" in result["msg"]
    assert result["active_connections"] == 7
    # wait=false does not wait.
    nowait, _ = run_module(M, dict(args, wait=False))
    assert nowait["changed"] is False and nowait["backend"]["active_connections"] == 7


def test_check_mode_reports_change_without_writing(lb_agent, run_module):
    lb_agent.counts.connections["node3"] = 5
    for state in ("disabled", "drained", "absent"):
        args = api_args(lb_agent, node="node3", state=state, weight=10)
        result, _ = run_module(M, args, check=True, diff=True)
        assert result["changed"] is True, (state, result)
    assert result["backend"] is None and result["diff"]["after"] == {}
    assert lb_agent.writes() == []
    assert lb_agent.backend("node3")["state"] == "active"
    assert lb_agent.backend("node3")["weight"] == 100


def test_diff_shows_weight_and_state_before_and_after(lb_agent, run_module):
    args = api_args(lb_agent, node="node1", state="disabled", weight=0)
    result, _ = run_module(M, args, diff=True)
    assert result["changed"] is True
    assert result["diff"] == {
        "before": {"weight": 100, "state": "active"},
        "after": {"weight": 0, "state": "disabled"},
    }
    assert lb_agent.writes() == [("POST", "/v1/backends/node1", {"weight": 0, "state": "disabled"})]
    back, _ = run_module(M, api_args(lb_agent, node="node1", weight=100), diff=True)
    assert back["diff"]["after"] == {"weight": 100, "state": "active"}


def test_absent_is_idempotent(lb_agent, run_module):
    args = api_args(lb_agent, node="node3", state="absent")
    first, _ = run_module(M, args, diff=True)
    second, _ = run_module(M, args, diff=True)
    assert (first["changed"], second["changed"]) == (True, False)
    assert first["diff"] == {"before": {"weight": 100, "state": "active"}, "after": {}}
    assert first["backend"] is None
    assert lb_agent.writes() == [("DELETE", "/v1/backends/node3", None)]
    assert lb_agent.backend("node3") is None


def test_invalid_weight_fails_before_any_request(lb_agent, run_module):
    for weight in (257, -1):
        result, _ = run_module(M, api_args(lb_agent, node="node2", weight=weight))
        assert result["failed"] is True
        assert f"weight must be between 0 and 256, got {weight}" in result["msg"]
    assert lb_agent.requests == []


def test_unknown_node_fails_clearly(lb_agent, run_module):
    for state in ("present", "drained", "disabled"):
        result, _ = run_module(M, api_args(lb_agent, node="node9", state=state))
        assert result["failed"] is True
        assert "'node9' is not a registered backend" in result["msg"], result["msg"]
        assert "node1, node2, node3" in result["msg"]
    assert lb_agent.writes() == []


def test_404_on_write_fails_with_msg(lb_agent, run_module):
    """The backend vanishes between the read and the write: the API's 404 is reported."""

    def vanish(method, path):
        if (method, path) == ("POST", "/v1/backends/node2"):
            lb_agent.store.delete(lb_agent.sim.keys.backend("node2"))

    lb_agent.before_request = vanish
    result, _ = run_module(M, api_args(lb_agent, node="node2", weight=5))
    assert result["failed"] is True and result["status"] == 404
    assert "'node2' is not a registered backend" in result["msg"]
    assert "no such backend: node2" in result["msg"]


def test_no_load_balancer_fails_clearly(agent, run_module):
    result, _ = run_module(M, api_args(agent, node="node2", state="absent"))
    assert result["failed"] is True and result["status"] == 404
    assert "no group has a load balancer" in result["msg"]
    assert agent.writes() == []
