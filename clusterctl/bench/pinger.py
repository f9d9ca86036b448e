"""An ICMP echo client for benchmarks: a ping every few milliseconds, and the longest time
without an answer (what a client saw of a pause). A raw socket, so root only (as the
sandbox's benchmarks run)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time

ECHO_REQUEST, ECHO_REPLY = 8, 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    checksum = _checksum(header)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum, ident, seq)


class Pinger:
    """Pings ``address`` every ``period`` s from the start of a ``with`` block to its end (at
    most ``limit`` s) and keeps when each answer came."""

    def __init__(self, address: str, period: float = 0.01, limit: float = 120.0) -> None:
        self.address = address
        self.period = period
        self.limit = limit
        self.ident = os.getpid() & 0xFFFF
        self.sent = 0
        self.answers: list[float] = []  # monotonic times of the replies, in order
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self._threads = [
            threading.Thread(target=self._send, name="pinger-send", daemon=True),
            threading.Thread(target=self._receive, name="pinger-receive", daemon=True),
        ]

    def __enter__(self) -> Pinger:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._sock.close()

    def _send(self) -> None:
        end = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < end:
            self.sent += 1
            # no route for a moment is an unanswered ping, as for any client
            with contextlib.suppress(OSError):
                self._sock.sendto(echo_request(self.ident, self.sent & 0xFFFF), (self.address, 0))
            self._stop.wait(self.period)

    def _receive(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.05)
            if not ready:
                continue
            packet, (source, _) = self._sock.recvfrom(1024)
            header_length = (packet[0] & 0x0F) * 4
            icmp = packet[header_length : header_length + 8]
            kind, _, _, ident, _ = struct.unpack("!BBHHH", icmp)
            if kind == ECHO_REPLY and ident == self.ident and source == self.address:
                self.answers.append(time.monotonic())

    def longest_silence(self) -> float:
        """The longest time between two answers (0 with fewer than two)."""
        gaps = (b - a for a, b in zip(self.answers, self.answers[1:], strict=False))
        return max(gaps, default=0.0)

    def lost(self) -> int:
        return max(0, self.sent - len(self.answers))
