"""What counts as a healthy cluster by the agents' status (shared by chaos and bench)."""

from __future__ import annotations

from clusterctl.agentclient import unhealthy


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
