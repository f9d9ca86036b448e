"""A real single-member etcd on loopback for the store tests (docs/machine-notes.md, etcd)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clusterctl.paths import ETCD_PACKAGE
from tests.tools import require_tool

REPO = Path(__file__).resolve().parents[2]

__all__ = ["ETCD_PACKAGE", "REPO"]


def _free_port() -> int:
    """A port nobody listens on right now (bound then released on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a loopback port nobody listens on."""
    return _free_port


def _ready(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/health", timeout=0.5) as response:
            return b'"health":"true"' in response.read()
    except OSError:
        return False


@pytest.fixture(scope="session")
def etcd_url() -> Iterator[str]:
    """Start etcd (heartbeat 50 ms, election 500 ms: 1 s leases allowed); yield its URL."""
    etcd = require_tool(*ETCD_PACKAGE)
    client, peer = _free_port(), _free_port()
    url = f"http://127.0.0.1:{client}"
    with tempfile.TemporaryDirectory(prefix="etcd-test-") as data_dir:
        log = open(os.path.join(data_dir, "etcd.log"), "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [
                etcd,
                "--name=test",
                f"--data-dir={data_dir}/data",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=test=http://127.0.0.1:{peer}",
                "--heartbeat-interval=50",
                "--election-timeout=500",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 10
            while not _ready(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    tail = Path(data_dir, "etcd.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"etcd did not become ready in 10 s:\n{tail}")
                time.sleep(0.05)
            yield url
        finally:
            # Kill exactly the process we started, by PID.
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
            log.close()
