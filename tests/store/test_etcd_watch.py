"""The watched copy of the state (agent/store/watch.py) against real etcd: it follows every
change, resyncs by revision after a compaction, and converges after the member its stream
was on, the etcd leader, is killed."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from clusterctl.agent.store.base import StoreUnavailable
from clusterctl.agent.store.etcd import EtcdStore, WatchStream
from clusterctl.agent.store.watch import KeyspaceMirror
from clusterctl.bench.scale import EtcdCluster
from clusterctl.paths import ETCD_PACKAGE
from clusterctl.reporter import ListReporter
from tests.tools import require_tool

START, END = "/watch/", "/watch0"


def _converges(mirror: KeyspaceMirror, store: EtcdStore, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        want = store.get_range(START, END)
        state = mirror.state
        if state is not None and dict(state.kv) == want:
            return
        if time.monotonic() > deadline:
            got = None if state is None else dict(state.kv)
            pytest.fail(f"the copy did not converge in {within} s: {got} != {want}")
        time.sleep(0.05)


def _open_stream(mirror: KeyspaceMirror) -> WatchStream:
    deadline = time.monotonic() + 10
    while mirror._stream is None:
        assert time.monotonic() < deadline, "no watch stream opened in 10 s"
        time.sleep(0.02)
    stream = mirror._stream
    assert isinstance(stream, WatchStream)
    return stream


def _retrying(call: Callable[[], object], within: float = 10.0) -> None:
    """A write through an election: retried until etcd answers."""
    deadline = time.monotonic() + within
    while True:
        try:
            call()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class GatedStore(EtcdStore):
    """A real store whose watches open only while ``gate`` is set."""

    gate: threading.Event

    def open_watch(
        self,
        start: str,
        end: str,
        after_revision: int,
        stall_timeout: float,
        fresh_token: bool = False,
    ) -> WatchStream:
        assert self.gate.wait(10), "the test never opened the gate"
        return super().open_watch(start, end, after_revision, stall_timeout, fresh_token)


def test_the_copy_follows_puts_and_deletes(etcd_url: str) -> None:
    store = EtcdStore([etcd_url])
    store.delete_prefix(START)
    mirror = KeyspaceMirror(EtcdStore([etcd_url]), START, END)
    woken = threading.Event()
    mirror.add_listener(lambda _changed: woken.set())
    mirror.start()
    try:
        for i in range(20):
            store.put(f"{START}k{i}", str(i))
        store.delete(f"{START}k3")
        store.put(f"{START}k4", "changed")
        _converges(mirror, store)
        assert woken.is_set() and mirror.resyncs == 1 and mirror.reopens == 0
        time.sleep(1.5)  # a quiet stream is still vouched for: progress words
        assert mirror.fresh(time.monotonic()) is not None
    finally:
        mirror.stop()


def test_a_gap_past_a_compaction_is_closed_by_reading_the_range_again(etcd_url: str) -> None:
    store = EtcdStore([etcd_url])
    store.delete_prefix(START)
    store.put(f"{START}before", "1")
    watcher = GatedStore([etcd_url])
    watcher.gate = threading.Event()
    watcher.gate.set()
    mirror = KeyspaceMirror(watcher, START, END)
    mirror.start()
    try:
        _converges(mirror, store)
        stream = _open_stream(mirror)
        watcher.gate.clear()  # the next stream waits: a gap opens
        stream.close()  # as a member's crash would end it
        store.delete(f"{START}before")
        for i in range(5):
            store.put(f"{START}during{i}", str(i))
        revision = store.range_at_revision(START, END)[1]
        store.member_call(etcd_url, "/v3/kv/compaction", {"revision": str(revision)})
        watcher.gate.set()
        _converges(mirror, store)
        assert mirror.resyncs == 2  # the first read, and one after the compaction
    finally:
        watcher.gate.set()
        mirror.stop()


@pytest.fixture
def three_members() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(require_tool(*ETCD_PACKAGE), ListReporter())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _leader_index(store: EtcdStore, endpoints: list[str]) -> int:
    for index, endpoint in enumerate(endpoints):
        status = store.member_call(endpoint, "/v3/maintenance/status", {})
        if status.get("leader") == status.get("header", {}).get("member_id"):
            return index
    pytest.fail("no etcd member says it leads")


def test_the_copy_converges_after_the_etcd_leader_under_its_stream_is_killed(
    three_members: EtcdCluster,
) -> None:
    endpoints = three_members.endpoints
    writer = EtcdStore(endpoints)
    leader = _leader_index(writer, endpoints)
    ordered = [endpoints[leader]] + [e for i, e in enumerate(endpoints) if i != leader]
    mirror = KeyspaceMirror(EtcdStore(ordered), START, END)  # its first stream: the leader
    mirror.start()
    try:
        for i in range(10):
            writer.put(f"{START}k{i}", str(i))
        _converges(mirror, writer)
        assert _open_stream(mirror).endpoint == endpoints[leader]
        os.kill(three_members.pids[leader], signal.SIGKILL)
        for i in range(10, 30):
            _retrying(lambda i=i: writer.put(f"{START}k{i}", str(i)))
        for i in range(0, 10, 2):
            _retrying(lambda i=i: writer.delete(f"{START}k{i}"))
        _converges(mirror, writer)
        assert mirror.reopens >= 1
        assert _open_stream(mirror).endpoint != endpoints[leader]
        assert mirror.fresh(time.monotonic()) is not None
    finally:
        mirror.stop()
