"""The failover history: what agents record, how it reaches the store, how it expires."""

from __future__ import annotations

import pytest

from clusterctl.agent import admin
from clusterctl.agent.history import (
    FIRST_START,
    History,
    HistoryEntry,
    HistoryWriter,
    last_failover,
    read_history,
)
from clusterctl.agent.keys import Keys
from clusterctl.agent.store.memory import FakeClock, MemoryBackend, MemoryStore

from .agentsim import Sim, holder

KEYS = Keys("demo")


def events(sim: Sim, node: str) -> list[tuple[str, str, str]]:
    return [(e.event, e.group, e.reason) for e in sim.agents[node].history.pending()]


def test_first_holder_records_why_it_took_the_group(sim: Sim) -> None:
    node = holder(sim)
    assert ("acquired", "web", FIRST_START) in events(sim, node)
    for other in sim.nodes:
        if other != node:
            assert not [e for e in events(sim, other) if e[0] == "acquired"]


def test_crash_of_the_holder_names_it_in_the_new_holders_entry(sim: Sim) -> None:
    old = holder(sim)
    sim.crash(old)
    sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=3.0)
    (new,) = sim.vip_on()
    reason = f"{old} stopped renewing its lease (node, agent or network down)"
    assert ("acquired", "web", reason) in events(sim, new)


def test_partitioned_holder_records_its_fence_and_the_reason(sim: Sim) -> None:
    old = holder(sim)
    sim.partition(old)
    sim.run_until(lambda: old not in sim.vip_on() and len(sim.vip_on()) == 1, timeout=3.0)
    fences = [e for e in events(sim, old) if e[0] == "fenced"]
    assert fences == [("fenced", "web", "renewal failed")]


def test_planned_move_is_recorded_on_both_sides(sim: Sim) -> None:
    old = holder(sim)
    target = next(n for n in sim.nodes if n != old)
    admin.request_move(sim.admin, sim.keys, "web", target)
    sim.run_until(lambda: sim.vip_on() == [target], timeout=5.0)
    assert ("acquired", "web", f"planned move from {old}") in events(sim, target)
    assert ("released", "web", f"moving web to {target}") in events(sim, old)


def test_failed_monitor_and_restart_in_place_are_recorded(sim: Sim) -> None:
    node = holder(sim)
    sim.fake[node].units.discard("nginx.service")  # nginx died
    sim.run(1.0)
    assert sim.vip_on() == [node]
    recorded = events(sim, node)
    assert ("monitor-failed", "web", "nginx failed its check (1/3)") in recorded
    assert ("restarted", "web", "nginx restarted in place") in recorded


def test_standby_is_recorded_once_per_switch(sim: Sim) -> None:
    node = holder(sim)
    sim.agents[node].set_standby(True)
    sim.run(1.0)
    sim.agents[node].set_standby(False)
    sim.run(0.5)
    switches = [e[0] for e in events(sim, node) if e[0] in ("standby", "unstandby")]
    assert switches == ["standby", "unstandby"]


def test_writer_puts_entries_with_a_lease_and_they_expire_after_the_retention() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock)
    history = History("node1", wall=lambda: 1_700_000_000.0 + clock.now())
    writer = HistoryWriter(history, MemoryStore(backend, "node1"), KEYS, 100.0, clock=clock)
    history.record("acquired", "web", FIRST_START)
    assert writer.flush() == 1 and history.pending() == []
    clock.advance(50)
    history.record("released", "web", "moving web to node2")
    assert writer.flush() == 1
    reader = MemoryStore(backend, "reader")
    assert [e.event for e in read_history(reader, KEYS)] == ["acquired", "released"]
    clock.advance(51)  # the first entry's lease (100 s) is gone; the second's bucket lives
    assert [e.event for e in read_history(reader, KEYS)] == ["released"]
    clock.advance(100)
    assert read_history(reader, KEYS) == []


def test_a_cut_off_writer_keeps_its_entries_and_writes_them_with_their_own_time() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock)
    history = History("node1", wall=lambda: 1_700_000_000.0 + clock.now())
    writer = HistoryWriter(history, MemoryStore(backend, "node1"), KEYS, clock=clock)
    backend.partition("node1")
    fenced = history.record("fenced", "web", "renewal failed")
    assert writer.flush() == 0 and history.pending() == [fenced]
    clock.advance(30)
    backend.heal("node1")
    assert writer.flush() == 1
    (entry,) = read_history(MemoryStore(backend, "reader"), KEYS)
    assert entry == fenced


def test_the_queue_is_bounded_and_counts_what_it_dropped() -> None:
    history = History("node1", max_pending=3)
    for n in range(5):
        history.record("backend-down", reason=f"node{n}")
    assert [e.reason for e in history.pending()] == ["node2", "node3", "node4"]
    assert history.dropped == 2


def test_reading_filters_by_group_and_time_and_keeps_node_wide_events() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock)
    store = MemoryStore(backend, "node1")
    at = iter([100.0, 200.0, 300.0, 400.0])
    history = History("node1", wall=lambda: next(at))
    writer = HistoryWriter(history, store, KEYS, clock=clock)
    history.record("acquired", "web", FIRST_START)
    history.record("acquired", "db", FIRST_START)
    history.record("standby")
    history.record("released", "web", "standby")
    writer.flush()
    web = read_history(store, KEYS, group="web")
    assert [(e.event, e.group) for e in web] == [
        ("acquired", "web"),
        ("standby", ""),
        ("released", "web"),
    ]
    assert [e.at for e in read_history(store, KEYS, since=250.0)] == [300.0, 400.0]


def test_the_loops_read_of_the_state_leaves_the_history_out() -> None:
    clock = FakeClock()
    store = MemoryStore(MemoryBackend(clock), "node1")
    store.put(KEYS.member("node1"), "{}")
    store.put(KEYS.history(1.0, "node1", 1), HistoryEntry(1.0, "node1", "standby").to_json())
    assert list(store.get_range(KEYS.root, KEYS.state_end)) == [KEYS.member("node1")]


def test_last_failover_skips_the_first_start() -> None:
    entries = [
        HistoryEntry(1.0, "node1", "acquired", "web", FIRST_START),
        HistoryEntry(2.0, "node2", "acquired", "web", "node1 released it"),
        HistoryEntry(3.0, "node3", "acquired", "db", FIRST_START),
    ]
    assert last_failover(entries, "web") == entries[1]
    assert last_failover(entries, "db") is None


@pytest.mark.parametrize("text", ["", "[]", "{}", '{"at": "x", "node": "n", "event": "e"}', "nul"])
def test_an_entry_that_is_not_one_is_ignored(text: str) -> None:
    assert HistoryEntry.from_json(text) is None


def test_unknown_events_are_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown history event"):
        History("node1").record("exploded")
