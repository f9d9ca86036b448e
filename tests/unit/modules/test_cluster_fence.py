"""cluster_fence against the real agent API over a simulated cluster (sim_agent.py)."""

from __future__ import annotations

from tests.unit.modules.conftest import api_args

M = "cluster_fence"


def _dead_owner(agent, node: str = "node3") -> None:
    """``node`` owns web (as a fencing group's owner would) and is dead: its lease expires."""
    agent.store.put(agent.sim.keys.owner("web"), node)
    agent.sim.crash(node)
    agent.wait(
        lambda: not next(m for m in agent.status()["members"] if m["name"] == node)["online"]
    )


def test_a_dead_owner_is_confirmed_once_and_check_mode_writes_nothing(agent, run_module):
    _dead_owner(agent)
    checked, _ = run_module(M, api_args(agent, node="node3"), check=True, diff=True)
    assert checked["changed"] is True and checked["released"] == ["web"]
    assert checked["diff"] == {"before": {"owns": ["web"]}, "after": {"owns": []}}
    assert agent.writes() == []
    done, _ = run_module(M, api_args(agent, node="node3"))
    assert done["changed"] is True and done["released"] == ["web"]
    assert "confirmed node3 is off" in done["sentence"]
    assert agent.writes() == [("POST", "/v1/nodes/node3/confirm-fenced", {})]
    again, _ = run_module(M, api_args(agent, node="node3"))
    assert again["changed"] is False and again["released"] == []
    assert len(agent.writes()) == 1


def test_an_online_or_unknown_node_is_refused_before_any_write(agent, run_module):
    online, _ = run_module(M, api_args(agent, node="node2"))
    assert online["failed"] is True and "is online" in online["msg"]
    unknown, _ = run_module(M, api_args(agent, node="node9"))
    assert unknown["failed"] is True and "not a node of this cluster" in unknown["msg"]
    assert agent.writes() == []
