"""The daemon: config errors, systemd notify, the loop, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from clusterctl.agent.clock import MonotonicClock
from clusterctl.agent.config import AgentConfig
from clusterctl.agent.daemon import main, run
from clusterctl.agent.ha import Agent
from clusterctl.agent.notify import SystemdNotifier
from clusterctl.agent.store.memory import MemoryBackend, MemoryStore

from .agentsim import FakeNode, web_group

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def abstract_socket():
    """A datagram socket on an abstract address; yields (address for $NOTIFY_SOCKET, sock)."""
    name = f"clusterctl-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        yield "@" + name, sock


def test_check_config_errors_name_the_rule(tmp_path: Path, capsys) -> None:
    path = tmp_path / "agent.json"
    path.write_text(
        json.dumps({"node": "n1", "etcd_endpoints": ["http://127.0.0.1:1"], "renew_interval": 0.5})
    )
    assert main(["--config", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "clusterctl-agent: config error: renew_interval * 3 <= lease_ttl: "
        "0.5 * 3 > 1.0: too few renewals per lease\n"
    )
    base = {"node": "n1", "etcd_endpoints": ["http://127.0.0.1:1"]}
    path.write_text(json.dumps({**base, "api_port": 0}))
    assert main(["--config", str(path), "--check-config"]) == 0
    assert capsys.readouterr().out == (
        "config OK: node n1, cluster demo, no groups, API disabled\n"
        "timings: lease_ttl=1 renew_interval=0.2 holding_renew_interval=0.1 "
        "renew_timeout=0.25 fence_margin=0.4 "
        "loop_interval=0.1 request_timeout=0.5 vip_lifetime=-\n"
    )
    # The API is on by default: its token file must be readable.
    missing = tmp_path / "no-token"
    path.write_text(json.dumps({**base, "api_token_file": str(missing)}))
    assert main(["--config", str(path), "--check-config"]) == 2
    assert capsys.readouterr().err == (
        f"clusterctl-agent: config error: api_token_file readable: {missing}: "
        "No such file or directory\n"
    )
    token = tmp_path / "api-token"
    token.write_text("\n")
    path.write_text(json.dumps({**base, "api_token_file": str(token)}))
    assert main(["--config", str(path), "--check-config"]) == 2
    assert capsys.readouterr().err.endswith(f"api_token_file readable: {token} is empty\n")
    token.write_text("s3cret\n")
    assert main(["--config", str(path), "--check-config"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(", no groups, API on 0.0.0.0:7480")


def test_notifier_abstract_socket(abstract_socket) -> None:
    address, sock = abstract_socket
    notifier = SystemdNotifier(address)
    assert notifier.ready() and notifier.watchdog()
    assert sock.recv(100) == b"READY=1"
    assert sock.recv(100) == b"WATCHDOG=1"
    assert SystemdNotifier("").ready() is False  # not under systemd: a no-op
    assert SystemdNotifier("@no-such-socket-" + uuid.uuid4().hex).ready() is False


def test_run_loop_pings_and_shuts_down(abstract_socket) -> None:
    address, sock = abstract_socket
    clock = MonotonicClock()
    config = AgentConfig(
        node="node1", etcd_endpoints=("http://127.0.0.1:2379",), groups=(web_group(),)
    ).validate()
    store = MemoryStore(MemoryBackend(clock), "node1")
    fake = FakeNode("node1", clock)  # type: ignore[arg-type]
    agent = Agent(config, store, clock, fake, arp_sender=lambda i, a: None)
    stop = threading.Event()
    timer = threading.Timer(0.6, stop.set)
    timer.start()
    try:
        assert run(agent, SystemdNotifier(address), stop) == 0
    finally:
        timer.cancel()
    messages = []
    sock.settimeout(0.1)
    try:
        while True:
            messages.append(sock.recv(200).decode())
    except TimeoutError:
        pass
    assert messages[0] == "READY=1"  # after the start-up cleanup
    assert "STATUS=acquired web on node1" in messages
    assert messages.count("WATCHDOG=1") >= 3
    assert messages[-1] == "STOPPING=1"
    assert fake.addresses == set() and fake.units == set()  # stopped on shutdown
    assert store.get_prefix("/clusterctl/demo/members/") == {}  # lease revoked


def test_daemon_process_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    dead = f"http://127.0.0.1:{free_port()}"  # no etcd: the agent loops on "no quorum"
    path.write_text(json.dumps({"node": "n1", "etcd_endpoints": [dead], "api_port": 0}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "clusterctl.agent.daemon", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        time.sleep(0.7)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    assert proc.returncode == 0, err
    assert "no quorum: store unreachable, standing by" in err
    assert "shutting down: held nothing, had no lease" in err
    assert err.count("no quorum") == 1  # logged once, not every iteration


def test_daemon_process_serves_the_api(tmp_path: Path) -> None:
    token = tmp_path / "api-token"
    token.write_text("s3cret\n")
    port = free_port()
    path = tmp_path / "agent.json"
    dead = f"http://127.0.0.1:{free_port()}"
    config = {
        "node": "n1",
        "etcd_endpoints": [dead],
        "api_port": port,
        "api_bind": "127.0.0.1",
        "api_token_file": str(token),
    }
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "clusterctl.agent.daemon", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://127.0.0.1:{port}/v1/health"

    def get(headers: dict[str, str]) -> tuple[int, dict]:
        request = urllib.request.Request(url, headers=headers)
        try:
            with opener.open(request, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                status, body = get({"Authorization": "Bearer s3cret"})
            except OSError:
                assert time.monotonic() < deadline, "the API never answered"
                time.sleep(0.05)
                continue
            if body["sentence"] != "starting: no loop iteration yet":
                break
            time.sleep(0.05)
        # No etcd: the loop runs but the store is unreachable, so the node is unhealthy.
        assert status == 503
        assert body["healthy"] is False and body["node"] == "n1"
        assert body["sentence"] == "no quorum: store unreachable, standing by"
        assert get({}) == (401, {"error": "missing or invalid bearer token"})
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    assert proc.returncode == 0, err
    assert f"API listening on 127.0.0.1:{port}" in err
    assert "start-up cleanup: nothing was running" in err
    assert "Traceback" not in err


def test_the_loop_asks_for_real_time_and_says_what_it_got(monkeypatch) -> None:
    import os

    from clusterctl.agent.daemon import raise_priority

    asked = []
    monkeypatch.setattr(os, "sched_setscheduler", lambda *args: asked.append(args))
    assert raise_priority(20) == "CPU priority: the loop runs at SCHED_RR 20"
    ((pid, policy, param),) = asked
    assert pid == 0 and policy == os.SCHED_RR | os.SCHED_RESET_ON_FORK
    assert param.sched_priority == 20

    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert raise_priority(20).startswith("CPU priority: ordinary scheduling, real time refused")
    assert raise_priority(0) == "CPU priority: ordinary scheduling (realtime_priority 0)"
