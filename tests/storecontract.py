"""Store contract checks run against every backend (the in-memory one in tests/unit, etcd
in tests/store): the same assertions, so both honour the contract alike."""

from __future__ import annotations

import pytest

from clusterctl.agent.store import Compare, LeaseExpired, Store, Write


def check_hand_over_transactions(a: Store, b: Store, prefix: str = "/t/") -> None:
    """A holder's release and a new holder's take-over, each one transaction."""
    leader, owner = prefix + "leader", prefix + "owner"
    lease_a, lease_b = a.grant_lease(10), b.grant_lease(10)
    take_a = [Compare(leader, None), Compare(owner, None)]
    assert a.transaction(take_a, [Write(leader, "a", lease_a), Write(owner, "a")]) is True
    assert a.get(leader) == "a" and a.get(owner) == "a"
    # a retry of the applied take-over (its answer lost) still reports success
    assert a.transaction(take_a, [Write(leader, "a", lease_a), Write(owner, "a")]) is True
    # b cannot take it, nor release it for a
    take_b = [Compare(leader, None), Compare(owner, "a")]
    assert b.transaction(take_b, [Write(leader, "b", lease_b), Write(owner, "b")]) is False
    release_b = [Compare(leader, "b"), Compare(owner, "b")]
    assert b.transaction(release_b, [Write(leader, None), Write(owner, None)]) is False
    assert b.get(leader) == "a"
    # a releases both at once; then b's take-over (owner gone too) succeeds
    release_a = [Compare(leader, "a"), Compare(owner, "a")]
    assert a.transaction(release_a, [Write(leader, None), Write(owner, None)]) is True
    assert a.get(leader) is None and a.get(owner) is None
    assert a.transaction(release_a, [Write(leader, None), Write(owner, None)]) is False
    take_b = [Compare(leader, None), Compare(owner, None)]
    assert b.transaction(take_b, [Write(leader, "b", lease_b), Write(owner, "b")]) is True
    # an owner left behind (a crashed holder) fails a take-over that expected none
    b.revoke(lease_b)
    assert b.get(leader) is None and b.get(owner) == "b"
    assert a.transaction(take_a, [Write(leader, "a", lease_a), Write(owner, "a")]) is False
    # a lease that is gone: refused as LeaseExpired when the compares hold
    a.revoke(lease_a)
    with pytest.raises(LeaseExpired):
        a.transaction([Compare(leader, None)], [Write(leader, "a", lease_a)])
    a.delete(owner)
