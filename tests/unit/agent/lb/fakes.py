"""Test helpers (not a test module): a fake runner with stdin and a fake HAProxy socket."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence

from clusterctl.agent.resources.runner import CommandResult


class FakeRunner:
    """Records every command with its stdin; answers from ``results`` (by argv prefix)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.results: dict[tuple[str, ...], CommandResult] = {}

    def run(self, argv: Sequence[str], timeout: float, stdin: str | None = None) -> CommandResult:
        assert timeout > 0
        self.calls.append((list(argv), stdin))
        for prefix, result in self.results.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return result
        return CommandResult(0)

    def commands(self) -> list[str]:
        return [" ".join(argv) for argv, _ in self.calls]


class FakeHaproxySocket:
    """A UNIX socket server answering one command per connection, like HAProxy's
    non-interactive runtime API. ``handler(command) -> answer``; commands are recorded."""

    def __init__(self, handler: Callable[[str], str]) -> None:
        self.handler = handler
        self.commands: list[str] = []
        self._dir = tempfile.mkdtemp(prefix="fakehap")
        self.path = os.path.join(self._dir, "admin.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(8)
        self._server.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                command = data.decode().strip()
                self.commands.append(command)
                conn.sendall(self.handler(command).encode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()
        os.unlink(self.path)
        os.rmdir(self._dir)
