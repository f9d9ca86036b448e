"""The watched copy of the state (agent/store/watch.py) and the readers of it, with a fake
store and a fake clock; tests/store/test_etcd_watch.py runs the same against a real etcd."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from clusterctl.agent.statereader import MirrorReader
from clusterctl.agent.store.base import StoreUnavailable
from clusterctl.agent.store.watch import Compacted, KeyspaceMirror


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def put(key: str, value: str, revision: int) -> dict[str, Any]:
    return {"kv": {"key": _b64(key), "value": _b64(value), "mod_revision": str(revision)}}


def delete(key: str, revision: int) -> dict[str, Any]:
    return {"type": "DELETE", "kv": {"key": _b64(key), "mod_revision": str(revision)}}


class FakeSource:
    """A store at ``revision`` with ``kv``; ``ranges`` counts the direct reads."""

    def __init__(self, kv: dict[str, str], revision: int) -> None:
        self.kv = kv
        self.revision = revision
        self.ranges = 0
        self.watched_from: list[int] = []

    def range_at_revision(
        self, start: str, end: str, timeout: float | None = None
    ) -> tuple[dict[str, str], int]:
        self.ranges += 1
        return dict(self.kv), self.revision

    def open_watch(
        self,
        start: str,
        end: str,
        after_revision: int,
        stall_timeout: float,
        fresh_token: bool = False,
    ) -> Any:
        self.watched_from.append(after_revision)
        raise StoreUnavailable("no stream in this test")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def world() -> tuple[FakeSource, Clock, KeyspaceMirror]:
    source, clock = FakeSource({"/c/a": "1"}, 5), Clock()
    mirror = KeyspaceMirror(source, "/c/", "/c0", clock=clock)
    mirror.resync()
    return source, clock, mirror


def test_events_and_progress_words_keep_the_copy_current(world) -> None:
    _source, clock, mirror = world
    woken: list[tuple[str, ...] | None] = []
    mirror.add_listener(woken.append)
    clock.t += 0.5
    mirror.apply({"events": [put("/c/b", "2", 6), delete("/c/a", 7)]})
    assert dict(mirror.state.kv) == {"/c/b": "2"} and mirror.state.revision == 7
    assert woken == [("/c/b", "/c/a")]  # the keys that changed
    clock.t += 1.0
    mirror.apply({"header": {"revision": "9"}})  # a progress word: no change, but vouched
    assert mirror.state.revision == 9 and mirror.state.heard_at == clock.t
    assert len(woken) == 1  # nothing changed: nobody woken


def test_a_copy_not_vouched_for_goes_stale(world) -> None:
    _source, clock, mirror = world
    assert mirror.fresh(clock.t) is not None
    clock.t += mirror.stale_after + 0.01
    assert mirror.fresh(clock.t) is None


def test_compaction_and_cancellation_end_the_stream(world) -> None:
    _source, _clock, mirror = world
    with pytest.raises(Compacted):
        mirror.apply({"canceled": True, "compact_revision": "9"})
    with pytest.raises(StoreUnavailable.__mro__[1]):  # StoreError: reopen elsewhere
        mirror.apply({"canceled": True, "cancel_reason": "no leader"})
    mirror.apply({"created": True, "header": {"revision": "99"}})
    assert mirror.state.revision == 5  # "created" says nothing about what was sent


def test_the_reader_serves_a_fresh_copy_without_reading_the_store(world) -> None:
    source, clock, mirror = world
    reader = MirrorReader(source, mirror, clock)
    reads = source.ranges
    assert dict(reader.read(0.5)) == {"/c/a": "1"} and reader.serving
    assert source.ranges == reads


def test_the_reader_reads_the_store_while_the_copy_is_stale(world) -> None:
    source, clock, mirror = world
    reader = MirrorReader(source, mirror, clock)
    clock.t += mirror.stale_after + 0.01
    source.kv, source.revision = {"/c/a": "1", "/c/z": "9"}, 8
    assert dict(reader.read(0.5)) == {"/c/a": "1", "/c/z": "9"} and not reader.serving


def test_the_reader_never_goes_back_to_a_copy_behind_what_it_served(world) -> None:
    source, clock, mirror = world
    reader = MirrorReader(source, mirror, clock)
    clock.t += mirror.stale_after + 0.01
    source.kv, source.revision = {"/c/a": "1", "/c/z": "9"}, 8
    reader.read(0.5)  # revision 8, from the store
    mirror.apply({"header": {"revision": "6"}})  # vouched again, but only up to 6
    assert "/c/z" in reader.read(0.5) and not reader.serving  # the store again, not the copy
    mirror.apply({"events": [put("/c/z", "9", 8)]})
    assert dict(reader.read(0.5)) == {"/c/a": "1", "/c/z": "9"} and reader.serving


def test_a_broken_stream_is_reopened_after_the_last_revision_applied(world) -> None:
    source, clock, mirror = world
    mirror.apply({"events": [put("/c/b", "2", 6)]})
    with pytest.raises(StoreUnavailable):
        mirror.follow()
    assert source.watched_from == [6]  # etcd replays from 7: nothing missed


def test_a_holder_reads_the_store_itself_however_fresh_the_copy(world) -> None:
    source, clock, mirror = world
    reader = MirrorReader(source, mirror, clock)
    source.kv, source.revision = {"/c/a": "1", "/c/leader": "me"}, 6  # our write, not copied
    assert dict(reader.read(0.5, current=True)) == source.kv and not reader.serving
    assert "/c/leader" in reader.read(0.5)  # the copy is behind what was served: not used
    mirror.apply({"events": [put("/c/leader", "me", 6)]})
    assert dict(reader.read(0.5)) == source.kv and reader.serving


def test_a_stream_refused_for_its_token_says_so_and_creation_vouches_for_nothing(world) -> None:
    from clusterctl.agent.store.watch import WatchRefused

    _source, _clock, mirror = world
    with pytest.raises(WatchRefused):
        mirror.apply(
            {
                "created": True,
                "canceled": True,
                "cancel_reason": "rpc error: code = Unauthenticated desc = etcdserver: "
                "invalid auth token",
            }
        )
    assert mirror.apply({"created": True}) is False
    assert mirror.apply({"header": {"revision": "5"}}) is True


def test_streams_no_member_accepts_are_reopened_ever_later_not_at_once(world) -> None:
    """Seen on real nodes: with etcd down on the other members, the copy reopened every 3 ms
    (a stream that had brought something once counted as bringing something for ever); its
    thread and its log starved the agent's loop past the watchdog."""
    import threading

    source, _clock, mirror = world
    mirror.apply({"events": [put("/c/b", "2", 6)]})
    mirror._delivered = True  # the last stream brought something, then broke
    waits: list[float] = []
    stop = threading.Event()

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) >= 5:
            stop.set()
            mirror._stop.set()
        return stop.is_set()

    mirror._stop.wait = wait  # type: ignore[method-assign]
    mirror.run()  # open_watch always fails (FakeSource)
    assert waits[:5] == [0.2, 0.4, 0.8, 1.6, 3.2]
    assert len(source.watched_from) == 5
