"""Ctrl-C while `up` waits for SSH on nodes that accept connections but never answer (a
booting node): the process leaves at once, not after the probes' handshakes time out."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

WAITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from clusterctl.inventory import InventoryNode
    from clusterctl.sshcheck import wait_and_trust

    port = int(sys.argv[1])
    nodes = [InventoryNode(f"node{i}", "127.0.0.1", port=port) for i in (1, 2, 3)]
    print("waiting", flush=True)
    try:
        wait_and_trust(nodes, lambda n: Path("/nonexistent"), Path(sys.argv[2]), 120)
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


def test_ctrl_c_while_waiting_for_ssh_leaves_at_once(tmp_path) -> None:
    with socket.socket() as silent:  # accepts, never sends an SSH banner
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-c", WAITER, str(port), str(tmp_path / "known_hosts")],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "waiting\n"
            time.sleep(1.0)  # the probes are inside their handshakes now
            sent = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=10)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 130
    assert took < 2.0, f"exited {took:.2f} s after SIGINT"


def test_a_signal_during_a_playbook_cancels_it_and_then_reaches_the_process() -> None:
    """SIGTERM while the playbook runs: the cancel callback says so, the process lives on
    until the run ends, then the handler from before the run gets the signal; afterwards
    nothing of ansible-runner's handling is left."""
    from clusterctl.runner import signals_cancel

    got: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, _frame: got.append(signum))
    try:
        with signals_cancel() as cancelled:
            assert not cancelled()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert cancelled() and got == []
        assert got == [signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert got == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)
