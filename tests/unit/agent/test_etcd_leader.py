"""LeaderMover: the holder's agent hands etcd's leadership to another member."""

from __future__ import annotations

from typing import Any

import pytest

from clusterctl.agent.etcd_leader import LeaderMover
from clusterctl.agent.store.base import StoreUnavailable

MEMBERS = [
    {"ID": "11", "name": "node1", "clientURLs": ["https://10.0.0.11:2379"]},
    {"ID": "12", "name": "node2", "clientURLs": ["https://10.0.0.12:2379"]},
    {"ID": "13", "name": "node3", "clientURLs": []},  # not started yet: no target
]


class FakeMember:
    """The member behind one endpoint: who it is, who leads, what it was asked."""

    def __init__(self, me: str, leader: str) -> None:
        self.me, self.leader = me, leader
        self.calls: list[tuple[str, dict]] = []
        self.down = False

    def member_call(
        self, endpoint: str, path: str, body: dict, timeout: float | None = None
    ) -> Any:
        if self.down:
            raise StoreUnavailable(endpoint)
        self.calls.append((path, body))
        if path.endswith("/status"):
            return {"header": {"member_id": self.me}, "leader": self.leader}
        if path.endswith("/member/list"):
            return {"members": MEMBERS}
        self.leader = body["targetID"]
        return {}


def mover(member: FakeMember, held: list[str], grace: float = 0.0, clock=None) -> LeaderMover:
    return LeaderMover(
        member,  # type: ignore[arg-type]
        "https://10.0.0.11:2379",
        lambda: held,
        grace=grace,
        clock=clock or (lambda: 0.0),
    )


def test_leadership_moves_only_after_the_holder_has_led_for_the_grace() -> None:
    member = FakeMember(me="11", leader="11")
    now = [100.0]
    m = mover(member, ["web"], grace=10.0, clock=lambda: now[0])
    assert m.check() is None  # just became leader (a failover brought it): wait
    now[0] += 9.0
    assert m.check() is None
    now[0] += 1.5
    assert m.check() == "moved etcd leadership to node2: this node holds web"


def test_a_holder_that_leads_etcd_hands_leadership_to_a_started_member() -> None:
    member = FakeMember(me="11", leader="11")
    sentence = mover(member, ["web"]).check()
    assert sentence == "moved etcd leadership to node2: this node holds web"
    assert member.calls[-1] == ("/v3/maintenance/transfer-leadership", {"targetID": "12"})
    assert mover(member, ["web"]).check() is None  # it leads no more: nothing to do


def test_nothing_moves_when_this_node_holds_nothing_or_does_not_lead() -> None:
    member = FakeMember(me="11", leader="11")
    assert mover(member, []).check() is None and member.calls == []
    member = FakeMember(me="11", leader="12")
    assert mover(member, ["web"]).check() is None
    assert [path for path, _ in member.calls] == ["/v3/maintenance/status"]


def test_an_unanswering_member_is_an_error_for_the_caller() -> None:
    member = FakeMember(me="11", leader="11")
    member.down = True
    with pytest.raises(StoreUnavailable):
        mover(member, ["web"]).check()
