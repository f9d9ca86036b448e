"""The in-memory store honours the Store contract (leases, transactions, partitions)."""

from __future__ import annotations

import pytest

from clusterctl.agent.clock import FakeClock
from clusterctl.agent.store import LeaseExpired, StoreUnavailable
from clusterctl.agent.store.memory import MemoryBackend, MemoryStore
from tests.storecontract import check_hand_over_transactions


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_lease_binds_keys_until_expiry(clock: FakeClock) -> None:
    backend = MemoryBackend(clock)
    a = MemoryStore(backend, "a")
    lease = a.grant_lease(1.0)
    a.put("/k", "v", lease=lease)
    a.put("/p", "persistent")
    clock.advance(0.9)
    assert a.keepalive(lease) == 1.0
    clock.advance(0.99)
    assert a.get("/k") == "v"
    clock.advance(0.01)
    assert a.get("/k") is None and a.get("/p") == "persistent"
    with pytest.raises(LeaseExpired):
        a.keepalive(lease)
    with pytest.raises(LeaseExpired):
        a.create_if_absent("/k", "v", lease)


def test_transactions(clock: FakeClock) -> None:
    backend = MemoryBackend(clock)
    a, b = MemoryStore(backend, "a"), MemoryStore(backend, "b")
    assert a.create_if_absent("/l", "a") is True
    assert b.create_if_absent("/l", "b") is False
    assert b.compare_and_delete("/l", "b") is False
    assert a.compare_and_put("/l", "a", "a2") is True
    assert a.compare_and_delete("/l", "a2") is True
    assert b.create_if_absent("/l", "b") is True
    assert a.get_prefix("/") == {"/l": "b"}
    assert a.delete_prefix("/") == 1


def test_a_hand_over_in_one_transaction(clock: FakeClock) -> None:
    backend = MemoryBackend(clock)
    a, b = MemoryStore(backend, "a"), MemoryStore(backend, "b")
    check_hand_over_transactions(a, b)


def test_partition_and_granularity(clock: FakeClock) -> None:
    backend = MemoryBackend(clock, expiry_granularity=0.5)
    a = MemoryStore(backend, "a")
    lease = a.grant_lease(1.0)  # at t=1000.0, expires 1001.0, removed at the 1001.0 tick
    a.put("/k", "v", lease=lease)
    backend.partition("a")
    with pytest.raises(StoreUnavailable):
        a.get("/k")
    backend.partition("a", hang=True)
    with pytest.raises(StoreUnavailable):
        a.get("/k", timeout=0.3)
    assert clock.now() == pytest.approx(1000.3)
    backend.heal("a")
    clock.advance(0.75)  # 1001.05: expired, and the lessor tick at 1001.0 has passed
    assert a.get("/k") is None
    lease = a.grant_lease(1.0)  # at 1001.05 -> expires 1002.05 -> removed at 1002.5
    a.put("/k", "v", lease=lease)
    clock.advance(1.2)
    assert a.get("/k") == "v"
    clock.advance(0.3)
    assert a.get("/k") is None
