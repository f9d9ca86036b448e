"""The API as the agents serve it: TLS with the cluster's CA, a client certificate required,
and an HTTP layer that gives a hostile or broken client nothing but a short JSON answer."""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterctl.agent import api as api_module
from clusterctl.agent.api import Api, ApiServer
from clusterctl.agent.store.memory import MemoryStore
from clusterctl.agent.tls import TlsFiles
from clusterctl.pki import ClusterCA

from .agentsim import Sim

TOKEN = "t0ken-for-tls-tests"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, TlsFiles]:
    tmp = tmp_path_factory.mktemp("pki")
    ca = ClusterCA(tmp / "pki", "unit")
    node = ca.ensure_node("node1", ["127.0.0.1"])
    controller = ca.ensure_controller()
    other = ClusterCA(tmp / "other", "other")
    stranger = other.ensure_controller()
    return {
        "node": TlsFiles(str(ca.ca_cert), str(node.cert), str(node.key)),
        "controller": TlsFiles(str(ca.ca_cert), str(controller.cert), str(controller.key)),
        # a certificate of another cluster's CA
        "stranger": TlsFiles(str(ca.ca_cert), str(stranger.cert), str(stranger.key)),
        # trusts only the other CA: must not accept our server
        "other_ca": TlsFiles(str(other.ca_cert), str(stranger.cert), str(stranger.key)),
    }


@pytest.fixture
def server(pki) -> Iterator[ApiServer]:
    sim = Sim()
    sim.run(1.0)
    api = Api(sim.agents["node1"], TOKEN, MemoryStore(sim.backend, "api"))
    srv = ApiServer(api, "127.0.0.1", 0, pki["node"].server_context()).start()
    try:
        yield srv
    finally:
        srv.stop()


def request(
    srv: ApiServer,
    tls: TlsFiles | None,
    method: str = "GET",
    path: str = "/v1/health",
    token: str | None = TOKEN,
    body: bytes | None = None,
) -> tuple[int, dict, dict]:
    context = tls.client_context() if tls else ssl.create_default_context()
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=5, context=context)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else {}
    finally:
        conn.close()


def test_a_client_with_the_clusters_certificate_and_token_is_served(server, pki) -> None:
    status, headers, body = request(server, pki["controller"])
    assert status == 200 and "node" in body
    assert headers["Server"] == "clusterctl-agent"  # no Python version in a banner
    assert server.url.startswith("https://")


@pytest.mark.parametrize("who", ["none", "stranger"])
def test_no_client_certificate_or_another_cas_is_refused_at_the_handshake(server, pki, who) -> None:
    tls = None if who == "none" else pki["stranger"]
    context = tls.client_context() if tls else ssl.create_default_context(cafile=pki["node"].ca)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5, context=context)
        try:
            conn.request("GET", "/v1/health", headers={"Authorization": f"Bearer {TOKEN}"})
            conn.getresponse().read()
        finally:
            conn.close()


def test_the_client_refuses_a_server_of_another_ca(server, pki) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        request(server, pki["other_ca"])


def test_plain_http_gets_nothing(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        conn.request("GET", "/v1/health")
        conn.getresponse().read()
    conn.close()


def test_the_token_is_checked_before_the_body_is_read(server, pki, caplog) -> None:
    """A caller without the token gets 401 at once, even when it announces a body it never
    sends (a waiting server would keep the thread until the read timeout)."""
    context = pki["controller"].client_context()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    caplog.set_level(logging.WARNING, "clusterctl.agent.api")
    started = time.monotonic()
    sock.sendall(b"POST /v1/groups/web/move HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
    answer = sock.recv(4096)
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.0 401") or answer.startswith(b"HTTP/1.1 401"), answer
    assert elapsed < 2.0
    assert any("refused 127.0.0.1" in r.getMessage() for r in caplog.records)


def test_every_error_is_json(server, pki) -> None:
    for method in ("HEAD", "PATCH", "OPTIONS", "BREW"):
        status, headers, body = request(server, pki["controller"], method=method)
        assert status in (405, 501), (method, status)
        assert headers["Content-Type"] == "application/json"
        if method != "HEAD":
            assert "error" in body
    # deeply nested JSON within the size limit: a clean 400, not a 500 with a traceback
    nested = b'{"to": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    status, _, body = request(server, pki["controller"], "POST", "/v1/groups/web/move", body=nested)
    assert status == 400 and "error" in body


def test_a_slow_client_cannot_hold_a_connection_past_the_deadline(server, pki, monkeypatch):
    monkeypatch.setattr(api_module, "CONNECTION_DEADLINE", 1.0)
    context = pki["controller"].client_context()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    started = time.monotonic()
    closed_after = None
    try:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\n")
        # one header byte every 0.3 s: each read is quick, the whole request never ends
        for _ in range(40):
            sock.sendall(b"X")
            time.sleep(0.3)
    except OSError:
        closed_after = time.monotonic() - started
    finally:
        sock.close()
    assert closed_after is not None and closed_after < 3.0


def test_too_many_connections_are_closed_and_the_server_keeps_serving(server, pki, monkeypatch):
    context = pki["controller"].client_context()
    idle = []
    for _ in range(api_module.MAX_CONNECTIONS + 5):
        idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
    time.sleep(0.3)
    # the extra ones were closed at once
    closed = 0
    for sock in idle:
        sock.settimeout(0.2)
        try:
            if sock.recv(1) == b"":
                closed += 1
        except (TimeoutError, OSError):
            pass
    assert closed >= 5
    for sock in idle:
        sock.close()
    time.sleep(0.2)
    assert request(server, pki["controller"])[0] == 200
    del context


def test_fuzzed_requests_leave_the_server_serving(server, pki) -> None:
    """1,000 random requests (methods, paths, headers, bodies): each gets an answer or a
    closed connection, never a hang, and the server answers normally afterwards."""
    rng = random.Random(1234)
    context = pki["controller"].client_context()
    pieces = [b"GET", b"POST", b"/v1/", b"groups", b"%00", b"\r\n", b"Content-Length: ",
              b"-1", b"99999999", b"{", b"[", b'"', b"\xff", b"Authorization: Bearer ",
              TOKEN.encode(), b" HTTP/1.1", b"Host: x", b"\r\n\r\n", b"/..", b"?a=b"]  # fmt: skip
    for _ in range(1000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.settimeout(5)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            raw.close()
    assert request(server, pki["controller"])[0] == 200


def test_tls_files_are_checked_at_start(tmp_path: Path, pki) -> None:
    from clusterctl.agent.tls import TlsError

    with pytest.raises(TlsError, match="does not exist"):
        TlsFiles(str(tmp_path / "nope"), pki["node"].cert, pki["node"].key).check()
    mismatched = TlsFiles(pki["node"].ca, pki["node"].cert, pki["controller"].key)
    with pytest.raises(TlsError, match="cannot load"):
        mismatched.check()


def test_two_tokens_during_a_rotation_then_one(tmp_path: Path) -> None:
    from clusterctl.agent.api import load_tokens
    from clusterctl.agent.config import ConfigError

    sim = Sim()
    sim.run(1.0)
    token_file = tmp_path / "api-token"
    token_file.write_text("old\nnew\n")
    api = Api(sim.agents["node1"], load_tokens(token_file), MemoryStore(sim.backend, "api"))
    assert api.authorized("Bearer old") and api.authorized("Bearer new")
    assert api.token == b"old"  # what it sends to the other agents
    token_file.write_text("new\n")
    api.set_tokens(load_tokens(token_file))
    assert not api.authorized("Bearer old") and api.authorized("Bearer new")
    token_file.write_text("\n \n")
    with pytest.raises(ConfigError, match="is empty"):
        load_tokens(token_file)
