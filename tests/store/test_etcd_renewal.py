"""The lease renewal (``EtcdStore.keepalive``) goes to the etcd leader itself: against a real
etcd, and against scripted members for what a single etcd cannot show (a leader that dies
while the followers still name it, a leader this node cannot reach)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clusterctl.agent.store import StoreUnavailable
from clusterctl.agent.store.etcd import EtcdStore
from tests.fakehttp import answer_post


@contextmanager
def listener_that_never_answers() -> Iterator[str]:
    """A member that accepts requests and says nothing (partitioned, frozen)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        yield f"http://127.0.0.1:{hung.getsockname()[1]}"


class FakeMember:
    """An etcd member's status and keepalive answers, scripted by the test: ``leader`` is the
    member id it names as leader, ``term`` its Raft term; every keepalive it gets is counted
    with the leader it named at that moment."""

    def __init__(self, member_id: str) -> None:
        self.member_id = member_id
        self.leader = ""
        self.term = 1
        self.quorum = True  # False: a leader cut off from the others (no quorum read answers)
        self.read_term: int | None = None  # the term a quorum read answers in (default: term)
        self.renewals: list[str] = []
        member = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                header = {"member_id": member.member_id, "raft_term": str(member.term)}
                if self.path == "/v3/maintenance/status":
                    reply = {"header": header, "leader": member.leader}
                elif self.path == "/v3/lease/keepalive":
                    member.renewals.append(member.leader)
                    reply = {"result": {"header": header, "ID": "1", "TTL": "5"}}
                elif self.path == "/v3/kv/range":
                    if not member.quorum:  # a ReadIndex that never completes
                        time.sleep(1.0)
                        return
                    term = member.read_term if member.read_term is not None else member.term
                    reply = {"header": {**header, "raft_term": str(term)}, "count": "1"}
                else:
                    reply = {"code": 12, "message": "not faked"}
                answer_post(self, json.dumps(reply).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kill(self) -> None:
        """Its etcd is gone: connections are refused."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def members() -> Iterator[list[FakeMember]]:
    made = [FakeMember(str(1000 + i)) for i in range(3)]
    for m in made:
        m.leader = made[0].member_id
    yield made
    for m in made[1:]:
        m.kill()


def test_renewals_go_to_the_leader_found_by_its_status(etcd_url: str) -> None:
    with listener_that_never_answers() as hung:
        store = EtcdStore([hung, etcd_url], request_timeout=0.5)
        lease = store.grant_lease(5)
        start = time.monotonic()
        assert store.keepalive(lease, timeout=0.25) >= 1
        # the silent member's status is given up after 0.1 s; the leader answers at once
        assert time.monotonic() - start < 0.2
        start = time.monotonic()
        assert store.keepalive(lease, timeout=0.25) >= 1
        assert time.monotonic() - start < 0.05  # known now: no status asked
        store.close()


def test_a_dead_leader_is_not_renewed_through_followers_still_naming_it(members) -> None:
    a, b, c = members
    store = EtcdStore([m.url for m in members], request_timeout=0.5)
    store.keepalive(1, timeout=0.25)
    assert len(a.renewals) == 1  # the leader
    a.kill()

    def elect_b() -> None:
        time.sleep(0.15)  # the followers notice the dead leader after an election timeout
        b.term = c.term = 2
        b.leader = c.leader = b.member_id

    threading.Thread(target=elect_b).start()
    start = time.monotonic()
    store.keepalive(1, timeout=0.5)
    took = time.monotonic() - start
    assert 0.14 < took < 0.3, took  # renewed as soon as the new leader said so
    # nothing was sent to a follower while it named the dead leader (etcd would spin there)
    assert b.renewals == [b.member_id] and c.renewals == []
    store.close()


def test_a_leader_this_node_cannot_reach_is_renewed_through_a_follower(members) -> None:
    a, b, c = members
    with listener_that_never_answers() as hung:
        b.leader = c.leader = "999"  # the leader is a member behind the silent endpoint
        store = EtcdStore([hung, b.url, c.url], request_timeout=0.5)
        start = time.monotonic()
        store.keepalive(1, timeout=0.25)
        assert time.monotonic() - start < 0.2
        assert len(b.renewals) + len(c.renewals) == 1  # forwarded by a follower
        store.close()


def test_a_newer_raft_term_makes_the_next_renewal_look_the_leader_up(members) -> None:
    a, b, c = members
    store = EtcdStore([m.url for m in members], request_timeout=0.5)
    store.keepalive(1, timeout=0.25)
    # leadership moved to b (a transfer): a still answers, forwarding, in the new term
    for m in members:
        m.term, m.leader = 2, b.member_id
    store.keepalive(1, timeout=0.25)  # answered by a in term 2
    store.keepalive(1, timeout=0.25)  # looked up: b
    assert len(a.renewals) == 2 and b.renewals == [b.member_id]
    store.close()


def test_no_member_answering_fails_when_the_budget_is_spent(free_port) -> None:
    store = EtcdStore([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])
    start = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.keepalive(1234, timeout=0.2)
    assert 0.19 < time.monotonic() - start < 0.35
    store.close()


def test_status_threads_run_at_the_scheduling_of_the_thread_that_renews(etcd_url: str) -> None:
    # The agent's loop runs at SCHED_RR with reset-on-fork; here SCHED_BATCH stands for it
    # (no privilege needed): the threads asking the members must not fall back to the
    # default policy.
    found: dict[str, int] = {}

    def renew() -> None:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        with listener_that_never_answers() as hung:
            store = EtcdStore([hung, etcd_url], request_timeout=0.5)
            store.keepalive(store.grant_lease(5), timeout=0.25)
            for thread in threading.enumerate():
                if thread.name.startswith("etcd-renewal"):
                    found[thread.name] = os.sched_getscheduler(thread.native_id)
            store.close()

    thread = threading.Thread(target=renew)
    thread.start()
    thread.join(10)
    assert found and set(found.values()) == {os.SCHED_BATCH}, found


def test_a_renewal_at_a_leader_without_quorum_does_not_count(members) -> None:
    # The cut-off leader answers the renewal from its own lessor, but cannot confirm a quorum
    # read: the renewal must fail, so that the holder fences on time.
    a, b, c = members
    store = EtcdStore([m.url for m in members], request_timeout=0.5)
    store.keepalive(1, timeout=0.25)
    a.quorum = False
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="confirming the renewal"):
        store.keepalive(1, timeout=0.25)
    assert time.monotonic() - start < 0.35
    assert len(a.renewals) >= 2  # it answered; the answer did not count
    store.close()


def test_a_renewal_followed_by_a_new_term_is_made_again_at_the_new_leader(members) -> None:
    a, b, c = members
    store = EtcdStore([m.url for m in members], request_timeout=0.5)
    store.keepalive(1, timeout=0.25)
    # an election between a's answer to the renewal (term 1) and the read (term 2): b leads
    a.read_term = 2
    b.term = c.term = 2
    a.leader = b.leader = c.leader = b.member_id
    store.keepalive(1, timeout=0.5)
    assert b.renewals == [b.member_id]  # renewed again, where it counts
    store.close()


def test_a_silent_member_does_not_hold_up_finding_the_leader(members) -> None:
    a, b, c = members
    with listener_that_never_answers() as hung:
        store = EtcdStore([hung, a.url], request_timeout=0.5)
        start = time.monotonic()
        store.keepalive(1, timeout=0.25)
        # the leader's status answers at once; the silent member's 0.1 s is not waited for
        assert time.monotonic() - start < 0.08
        store.close()
