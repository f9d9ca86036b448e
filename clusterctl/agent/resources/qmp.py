"""A minimal QMP client: qemu's machine protocol over its unix socket.

QMP is JSON lines: qemu greets, the client negotiates (``qmp_capabilities``), then each command
gets one ``{"return": ...}`` or ``{"error": ...}``; asynchronous ``{"event": ...}`` lines may
come in between and are skipped. One connection per call keeps the agent free of long-lived
state that a restarted qemu would invalidate.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class QmpError(Exception):
    """qemu could not be asked (no socket, no answer in time) or refused the command."""


def execute(path: str, command: str, timeout: float, **arguments: Any) -> Any:
    """Run one QMP ``command`` on the qemu listening at ``path``; return its ``return``
    value. Raises ``QmpError`` within about ``timeout`` seconds."""
    deadline = time.monotonic() + max(timeout, 0.01)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(timeout, 0.01))
            sock.connect(path)
            reader = _Lines(sock, deadline)
            reader.next()  # the greeting
            _send(sock, "qmp_capabilities", {})
            _reply(reader)
            _send(sock, command, arguments)
            return _reply(reader)
    except OSError as exc:  # no socket, refused, timed out, reset
        raise QmpError(f"QMP {command}: {exc.strerror or exc}") from None


def _send(sock: socket.socket, command: str, arguments: dict[str, Any]) -> None:
    message: dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    sock.sendall(json.dumps(message).encode() + b"\n")


def _reply(reader: _Lines) -> Any:
    while True:
        message = reader.next()
        if "return" in message:
            return message["return"]
        if "error" in message:
            error = message["error"]
            raise QmpError(f"qemu refused: {error.get('desc', error)}")
        # an event: skip it


class _Lines:
    """JSON messages from the socket, one per line, all within ``deadline``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""

    def next(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("qemu closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            raise QmpError(f"not QMP: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise QmpError(f"not QMP: {line[:80]!r}")
        return message
