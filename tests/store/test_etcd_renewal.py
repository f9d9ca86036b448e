"""The hedged lease renewal (``EtcdStore.keepalive``) against a real etcd: a renewal stuck on
one member must not cost the fencing deadline while another member, or a fresh request to the
same one, would answer at once (what an etcd leader election looks like to a client)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

import pytest

from clusterctl.agent.store import LeaseExpired, StoreUnavailable
from clusterctl.agent.store.etcd import EtcdStore


@contextmanager
def listener_that_never_answers() -> Iterator[str]:
    """A member whose leader just died: it accepts the request and says nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        yield f"http://127.0.0.1:{hung.getsockname()[1]}"


@contextmanager
def first_connection_hangs(target: str) -> Iterator[str]:
    """A proxy in front of etcd that leaves its first connection unanswered and forwards
    every later one: a follower stuck on its first request, answering fresh ones."""
    parts = urlsplit(target)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not held:
                held.append(client)
                continue
            upstream = socket.create_connection((parts.hostname, parts.port), timeout=2)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        server.close()
        for s in held:
            s.close()


def test_a_renewal_stuck_on_one_member_is_answered_by_another(etcd_url: str) -> None:
    with listener_that_never_answers() as hung:
        store = EtcdStore([hung, etcd_url], request_timeout=0.5)
        lease = store.grant_lease(5)  # sequential call: the hung member costs its timeout
        store._current = 0  # the renewal starts at the stuck member, as after a leader loss
        start = time.monotonic()
        assert store.keepalive(lease, timeout=0.25) >= 1
        took = time.monotonic() - start
        # the second member is asked a fifth of the budget after the first (not after the
        # whole 0.25 s, which is what the sequential call spends on a stuck member)
        assert took < 0.15, took
        assert store._current == 1  # and later calls start there
        store.close()


def test_a_stuck_request_is_sent_again_fresh_to_the_same_member(etcd_url: str) -> None:
    with first_connection_hangs(etcd_url) as proxy:
        store = EtcdStore([proxy], request_timeout=0.5)
        lease = EtcdStore([etcd_url]).grant_lease(5)
        start = time.monotonic()
        assert store.keepalive(lease, timeout=0.25) >= 1
        took = time.monotonic() - start
        # the first request is given up after two fifths of the budget, a fresh one answers
        assert 0.09 < took < 0.2, took
        store.close()


def test_a_refused_member_is_retried_without_a_busy_loop_until_the_budget_ends(
    free_port,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = EtcdStore([dead, f"http://127.0.0.1:{free_port()}"], request_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="refused"):
        store.keepalive(1234, timeout=0.2)
    assert 0.19 < time.monotonic() - start < 0.35
    store.close()


def test_a_final_answer_from_any_member_ends_the_renewal(etcd_url: str) -> None:
    with listener_that_never_answers() as hung:
        store = EtcdStore([hung, etcd_url], request_timeout=0.5)
        store._current = 0
        start = time.monotonic()
        with pytest.raises(LeaseExpired):
            store.keepalive(0x7EADBEEF, timeout=0.25)  # no such lease
        assert time.monotonic() - start < 0.15
        store.close()


def test_renewal_threads_run_at_the_scheduling_of_the_thread_that_renews(
    etcd_url: str,
) -> None:
    # The agent's loop runs at SCHED_RR with reset-on-fork; here SCHED_BATCH stands for it
    # (no privilege needed): the renewal threads must not fall back to the default policy.
    found: dict[str, int] = {}

    def renew() -> None:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        with listener_that_never_answers() as hung:
            store = EtcdStore([hung, etcd_url], request_timeout=0.5)
            lease = store.grant_lease(5)
            store._current = 0
            store.keepalive(lease, timeout=0.25)
            for thread in threading.enumerate():
                if thread.name.startswith("etcd-renewal"):
                    found[thread.name] = os.sched_getscheduler(thread.native_id)
            store.close()

    thread = threading.Thread(target=renew)
    thread.start()
    thread.join(10)
    assert found and set(found.values()) == {os.SCHED_BATCH}, found
