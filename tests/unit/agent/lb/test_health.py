"""Health: the rise/fall machine, scheduling by inter, the HTTP check, the live set."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from clusterctl.agent.lb.health import HealthTracker, check_backends, http_check, live_backends
from clusterctl.agent.lb.model import Backend, BackendHealth, LbSpec


def run(tracker: HealthTracker, node: str, results: str) -> list[bool]:
    """Feed '+' (success) and '-' (failure); return the health after each result."""
    return [tracker.record(node, r == "+").healthy for r in results]


def test_rise_needs_consecutive_successes() -> None:
    t = HealthTracker(rise=2, fall=3, initially_healthy=False)
    assert run(t, "a", "+-+-++") == [False, False, False, False, False, True]
    assert t.state("a") == BackendHealth(True, 2, 0)


def test_fall_needs_consecutive_failures() -> None:
    t = HealthTracker(rise=2, fall=3)  # initially healthy, like HAProxy
    assert run(t, "a", "--+--+---") == [True] * 8 + [False]
    assert t.state("a") == BackendHealth(False, 0, 3)
    # Back up after rise successes.
    assert run(t, "a", "++") == [False, True]


def test_rise_and_fall_of_one() -> None:
    t = HealthTracker(rise=1, fall=1)
    assert run(t, "a", "-+-+") == [False, True, False, True]


def test_initial_state_is_configurable() -> None:
    assert HealthTracker(2, 3).state("new").healthy is True
    assert HealthTracker(2, 3, initially_healthy=False).state("new").healthy is False


def test_due_follows_inter() -> None:
    t = HealthTracker(2, 3, inter=1.0)
    assert t.due(["a", "b"], now=0.0) == ["a", "b"]
    t.record("a", True, now=0.0)
    t.record("b", True, now=0.5)
    assert t.due(["a", "b"], now=0.9) == []
    assert t.due(["a", "b"], now=1.0) == ["a"]
    assert t.due(["a", "b"], now=1.5) == ["a", "b"]


def test_retain_forgets_removed_backends() -> None:
    t = HealthTracker(1, 1, initially_healthy=False)
    t.record("a", True, now=0.0)
    t.record("b", True, now=0.0)
    t.retain(["b"])
    assert t.snapshot() == {"b": BackendHealth(True, 1, 0)}
    assert t.state("a").healthy is False and t.due(["a"], now=0.1) == ["a"]


def test_live_backends() -> None:
    backends = [
        Backend("n3", "10.0.0.13", 80),
        Backend("n1", "10.0.0.11", 80),
        Backend("n2", "10.0.0.12", 80, state="draining"),
        Backend("n4", "10.0.0.14", 80, state="disabled"),
        Backend("n5", "10.0.0.15", 80, weight=0),
        Backend("n6", "10.0.0.16", 80),  # unhealthy
        Backend("n7", "10.0.0.17", 80),  # no health known
    ]
    health = {b.node: BackendHealth(True) for b in backends[:5]}
    health["n6"] = BackendHealth(False, 0, 3)
    assert [b.node for b in live_backends(backends, health)] == ["n1", "n3"]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/health" else 503
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_check(web: int) -> None:
    assert http_check("127.0.0.1", web, "/health", 200, 1.0) is True
    assert http_check("127.0.0.1", web, "/other", 200, 1.0) is False
    assert http_check("127.0.0.1", web, "/other", 503, 1.0) is True


def test_http_check_refused_is_false() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        assert http_check("127.0.0.1", port, "/", 200, 0.5) is False


def test_check_backends(web: int) -> None:
    spec = LbSpec("10.0.0.100", 80, web, check_path="/health", check_timeout=1.0)
    backends = [
        Backend("up", "127.0.0.1", web),
        Backend("off", "127.0.0.1", web, state="disabled"),
        Backend("boom", "127.0.0.1", 1),
    ]

    def check(address: str, port: int, path: str, status: int, timeout: float) -> bool:
        if port == 1:
            raise RuntimeError("a buggy check")
        return http_check(address, port, path, status, timeout)

    assert check_backends(backends, spec, check) == {"up": True, "boom": False}
