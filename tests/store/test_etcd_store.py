"""EtcdStore against a real single-member etcd (started by the ``etcd_url`` fixture)."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from clusterctl.agent.store import LeaseExpired, StoreUnavailable
from clusterctl.agent.store.etcd import EtcdStore, prefix_range_end
from tests.storecontract import check_hand_over_transactions


@pytest.fixture
def store(etcd_url: str) -> EtcdStore:
    return EtcdStore([etcd_url], request_timeout=0.5)


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix per test so tests never see each other's keys."""
    return f"/clusterctl/t-{uuid.uuid4().hex[:8]}/"


def wait_until(predicate, timeout: float) -> float:
    """Poll ``predicate`` every 20 ms; return the seconds it took, fail after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def test_prefix_range_end() -> None:
    assert prefix_range_end("/a/") == b"/a0"
    assert prefix_range_end("a\U0010ffff") == b"a\xf4\x8f\xbf\xc0"
    assert prefix_range_end("") == b"\0"
    assert prefix_range_end(b"a\xff".decode("latin-1")) == b"a\xc3\xc0"


def test_put_get_prefix_delete(store: EtcdStore, prefix: str) -> None:
    assert store.get(prefix + "missing") is None
    store.put(prefix + "a", "1")
    store.put(prefix + "b/c", '{"x": "é"}')
    store.put(prefix[:-1] + "x", "outside")  # shares the text prefix but not the slash
    assert store.get(prefix + "a") == "1"
    assert store.get_prefix(prefix) == {prefix + "a": "1", prefix + "b/c": '{"x": "é"}'}
    assert store.delete(prefix + "a") is True
    assert store.delete(prefix + "a") is False
    assert store.delete_prefix(prefix) == 1
    assert store.get_prefix(prefix) == {}
    store.delete(prefix[:-1] + "x")


def test_create_if_absent_is_exclusive(store: EtcdStore, prefix: str) -> None:
    other = EtcdStore(store.endpoints)
    lease_a, lease_b = store.grant_lease(5), other.grant_lease(5)
    key = prefix + "groups/web/leader"
    assert store.create_if_absent(key, "node1", lease_a) is True
    assert other.create_if_absent(key, "node2", lease_b) is False
    assert store.get(key) == "node1"
    # A retry of the winning call (answer lost) still reports success.
    assert store.create_if_absent(key, "node1", lease_a) is True
    assert other.compare_and_delete(key, "node2") is False
    assert store.compare_and_delete(key, "node1") is True
    assert other.create_if_absent(key, "node2", lease_b) is True
    store.revoke(lease_a)
    other.revoke(lease_b)


def test_compare_and_put(store: EtcdStore, prefix: str) -> None:
    key = prefix + "move"
    assert store.compare_and_put(key, None, "v1") is True
    assert store.compare_and_put(key, "wrong", "v2") is False
    assert store.compare_and_put(key, "v1", "v2") is True
    assert store.get(key) == "v2"


def test_a_hand_over_in_one_transaction(store: EtcdStore, prefix: str) -> None:
    check_hand_over_transactions(store, EtcdStore(store.endpoints), prefix)


def test_lease_keepalive_and_expiry(store: EtcdStore, prefix: str) -> None:
    lease = store.grant_lease(1.0)
    key = prefix + "members/node1"
    store.put(key, "{}", lease=lease)
    # Keepalives keep the key for longer than the TTL.
    for _ in range(6):
        time.sleep(0.25)
        assert store.keepalive(lease) >= 1.0
    assert store.get(key) == "{}"
    # Without keepalives it vanishes: TTL plus etcd's ~0.5 s expiry check, at most.
    took = wait_until(lambda: store.get(key) is None, timeout=3.0)
    assert 0.5 < took < 2.0
    with pytest.raises(LeaseExpired):
        store.keepalive(lease)
    with pytest.raises(LeaseExpired):
        store.put(key, "{}", lease=lease)
    with pytest.raises(LeaseExpired):
        store.create_if_absent(key, "{}", lease=lease)


def test_revoke_deletes_bound_keys(store: EtcdStore, prefix: str) -> None:
    lease = store.grant_lease(10)
    store.put(prefix + "k", "v", lease=lease)
    store.revoke(lease)
    assert store.get(prefix + "k") is None
    store.revoke(lease)  # unknown lease: no-op


def test_failover_to_next_endpoint(etcd_url: str, prefix: str, free_port) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    store = EtcdStore([dead, etcd_url], request_timeout=0.5)
    store.put(prefix + "k", "v")
    assert store.get(prefix + "k") == "v"


def test_hung_endpoint_costs_one_request_timeout(etcd_url: str, prefix: str) -> None:
    # A listener that never answers: like an etcd member whose leader just died.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        store = EtcdStore([f"http://127.0.0.1:{hung.getsockname()[1]}", etcd_url], 0.2)
        start = time.monotonic()
        store.put(prefix + "k", "v")
        assert 0.15 < time.monotonic() - start < 1.0
        # The client now sticks to the endpoint that answered.
        start = time.monotonic()
        assert store.get(prefix + "k") == "v"
        assert time.monotonic() - start < 0.15


def test_blackholed_endpoint_is_left_after_one_failed_call(etcd_url: str, prefix: str) -> None:
    # A call whose whole budget goes to a member that never answers (a partitioned node)
    # fails, but the next call must start at another endpoint, not wait on the same one.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        store = EtcdStore([f"http://127.0.0.1:{hung.getsockname()[1]}", etcd_url], 0.5)
        with pytest.raises(StoreUnavailable):
            store.get(prefix + "k", timeout=0.2)
        start = time.monotonic()
        store.put(prefix + "k", "v", timeout=0.2)
        assert store.get(prefix + "k", timeout=0.2) == "v"
        assert time.monotonic() - start < 0.15


def test_unavailable_when_no_endpoint_answers(free_port) -> None:
    store = EtcdStore([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])
    with pytest.raises(StoreUnavailable):
        store.get("/x")
    with pytest.raises(StoreUnavailable):
        store.keepalive(1234)


def test_overall_timeout_is_respected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        store = EtcdStore([url, url, url], request_timeout=0.5)
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.keepalive(1, timeout=0.3)
        assert time.monotonic() - start < 0.5


def test_requests_reuse_one_connection(store: EtcdStore, prefix: str) -> None:
    # Renewals must not pay a TCP handshake each: one warm connection serves every call.
    store.put(prefix + "k", "v")
    (conn,) = store._pool._idle[store.endpoints[0]]
    local = conn.sock.getsockname()
    lease = store.grant_lease(5)
    for _ in range(20):
        store.keepalive(lease)
        assert store.get(prefix + "k") == "v"
    (conn,) = store._pool._idle[store.endpoints[0]]
    assert conn.sock.getsockname() == local
    store.close()
    assert store._pool._idle == {}
    assert store.get(prefix + "k") == "v"  # a closed pool opens a new connection


def test_endpoint_must_be_a_base_url() -> None:
    bad_urls = (
        "127.0.0.1:2379",
        "http://127.0.0.1:2379/v3",
        "http://127.0.0.1:2379/x#",
        "http://user@127.0.0.1:2379",
        "http://127.0.0.1:99999",
        "ftp://127.0.0.1:2379",
    )
    for bad in bad_urls:
        with pytest.raises(ValueError, match=r"http\(s\)://host:port"):
            EtcdStore([bad])
    with pytest.raises(ValueError, match="TLS files"):
        EtcdStore(["https://127.0.0.1:2379"])


def test_member_ready_asks_that_member_alone(etcd_url: str, free_port) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = EtcdStore([dead, etcd_url], request_timeout=0.5)
    assert store.member_ready(etcd_url, "/") is True
    # the live member next in the list does not answer for the dead one
    assert store.member_ready(dead, "/", timeout=0.3) is False


def test_credentials_work_while_auth_is_still_off(etcd_url: str, tmp_path) -> None:
    """A new cluster's agents start before the etcd role turns auth on: with credentials
    and auth off, the client sends no token and works."""
    from clusterctl.agent.store.etcd import EtcdCredentials

    password = tmp_path / "password"
    password.write_text("whatever\n")
    store = EtcdStore(
        [etcd_url], 0.5, credentials=EtcdCredentials("clusterctl-agent", str(password))
    )
    store.put("/creds-off/k", "v")
    assert store.get("/creds-off/k") == "v"
    assert store._token == ""
    store.delete("/creds-off/k")


def test_history_on_etcd_is_left_out_of_the_state_and_expires_by_itself(
    store: EtcdStore, prefix: str
) -> None:
    from clusterctl.agent.history import FIRST_START, History, HistoryWriter, read_history
    from clusterctl.agent.keys import Keys

    keys = Keys(prefix.strip("/").split("/")[-1])
    store.put(keys.member("node1"), "{}")
    history = History("node1")
    writer = HistoryWriter(history, store, keys, retention=2.0)
    history.record("acquired", "web", FIRST_START)
    history.record("fenced", "web", "renewal failed")
    assert writer.flush() == 2
    # the loop's read: state only, the history sorts after it
    assert list(store.get_range(keys.root, keys.state_end)) == [keys.member("node1")]
    entries = read_history(store, keys)
    assert [(e.event, e.reason) for e in entries] == [
        ("acquired", FIRST_START),
        ("fenced", "renewal failed"),
    ]
    # bound to a lease of the retention time that nobody keeps alive: etcd deletes them
    took = wait_until(lambda: read_history(store, keys) == [], timeout=6.0)
    assert took >= 1.0
    assert store.get(keys.member("node1")) == "{}"
    store.delete_prefix(keys.root)
