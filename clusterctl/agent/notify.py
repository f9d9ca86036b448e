"""systemd's notify protocol (sd_notify) with the standard library.

``Type=notify`` units wait for ``READY=1``; with ``WatchdogSec=`` systemd kills the service
(SIGABRT) unless ``WATCHDOG=1`` keeps arriving. The agent pings only after a healthy loop
iteration, so a hung loop gets the agent killed, and ``ExecStopPost=`` removes the VIP.
"""

from __future__ import annotations

import os
import socket


class SystemdNotifier:
    """Sends datagrams to ``$NOTIFY_SOCKET``; a no-op when not run by systemd.

    A leading ``@`` in the address means a Linux abstract socket (a NUL byte instead).
    Sending never raises: losing a notification must not break the loop.
    """

    def __init__(self, address: str | None = None) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET") if address is None else address

    def notify(self, state: str) -> bool:
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the loop: a full receive queue (10 datagrams by default) would
                # otherwise stall it until systemd reads; a lost ping is the lesser evil.
                sock.sendto(state.encode(), socket.MSG_DONTWAIT, target)
        except OSError:
            return False
        return True

    def ready(self) -> bool:
        return self.notify("READY=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify("STATUS=" + text.replace("\n", " "))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")
