"""KeepAlivePool against small loopback HTTP servers (no etcd needed)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clusterctl.agent.store import StoreUnavailable
from clusterctl.agent.store.etcd import EtcdStore, KeepAlivePool
from tests.fakehttp import answer_post


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the handler closes
    close_after_answer = False
    connections: list[tuple[str, int]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        self.connections.append(self.client_address)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.close_after_answer:
            # Like a server whose idle timeout fired: the socket closes without a
            # "Connection: close" header, so the client believes it can reuse it.
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def _serve(close_after_answer: bool) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    handler = type("H", (_Handler,), {"close_after_answer": close_after_answer, "connections": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.connections
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def keepalive_server() -> Iterator[tuple[str, list[tuple[str, int]]]]:
    yield from _serve(close_after_answer=False)


@pytest.fixture
def closing_server() -> Iterator[tuple[str, list[tuple[str, int]]]]:
    yield from _serve(close_after_answer=True)


def test_one_connection_serves_sequential_requests(keepalive_server) -> None:
    url, connections = keepalive_server
    pool = KeepAlivePool()
    for n in range(5):
        assert pool.post(url, "/x", str(n).encode(), 2.0) == (200, str(n).encode())
    assert len(connections) == 5 and len(set(connections)) == 1
    pool.close()


def test_connection_closed_by_server_is_replaced_transparently(closing_server) -> None:
    url, connections = closing_server
    pool = KeepAlivePool()
    for n in range(3):
        assert pool.post(url, "/x", b"%d" % n, 2.0) == (200, b"%d" % n)
    assert len(set(connections)) == 3  # each call after the first needed a fresh connection


def test_timeout_closes_the_connection_and_never_pools_it() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        pool = KeepAlivePool()
        with pytest.raises(OSError):
            pool.post(url, "/x", b"", 0.1)
        assert pool._idle == {}


def test_idle_connections_are_capped(keepalive_server) -> None:
    url, _ = keepalive_server
    pool = KeepAlivePool(max_idle=1)
    first, _ = pool._take(url, 1.0)
    second, _ = pool._take(url, 1.0)
    pool._give_back(url, first)
    pool._give_back(url, second)
    assert pool._idle[url] == [first]
    pool.close()


class _GarbageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        answer_post(self, b"<html>not etcd</html>")

    def log_message(self, *args: object) -> None:
        pass


def test_store_skips_a_member_whose_answer_is_not_json() -> None:
    # A 200 that is not etcd's JSON (a wrong port, a proxy page) is no answer: the store
    # tries the next member instead of taking it for an empty reply.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GarbageHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        store = EtcdStore([f"http://127.0.0.1:{server.server_address[1]}"], 0.5)
        with pytest.raises(StoreUnavailable, match="unreadable answer to /v3/kv/range"):
            store.get("/x")
    finally:
        server.shutdown()
        server.server_close()
