"""Running commands: the one place where resources touch the system.

Resources never call ``subprocess`` themselves; they get a ``CommandRunner``. Unit tests pass a
fake runner that records commands and simulates their results. A command may be given its
standard input (``nft -f -`` reads its script there, rather than from a temporary file that
could fail and would have to be cleaned up). Two calls on the link are made from the agent's
own process rather than by a command: setting an address (netlink.py says why) and asking who
answers ARP for one (arp.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from clusterctl.agent.resources import netlink
from clusterctl.agent.resources.arp import find_address_owner


@dataclass(frozen=True)
class CommandResult:
    """Outcome of one command. ``rc`` is 124 when the command was killed at its timeout."""

    rc: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0


class CommandRunner(Protocol):
    def run(self, argv: Sequence[str], timeout: float, stdin: str | None = None) -> CommandResult:
        """Run ``argv`` (no shell); return within about ``timeout`` seconds, killing it if
        needed. ``stdin`` (if given) is written to its standard input, which is then closed.
        Never raises for a failing or missing command: that is a non-zero ``rc``."""
        ...

    def set_address(
        self, interface: str, cidr: str, lifetime: int | None, timeout: float
    ) -> CommandResult:
        """Add or refresh the IPv4 address ``cidr`` on ``interface``, with a kernel lifetime
        of ``lifetime`` seconds if given. Never raises: a failure is a non-zero ``rc``."""
        ...

    def address_owner(self, interface: str, address: str) -> str | None:
        """The MAC of another host that answers ARP for ``address`` on ``interface``, or
        None. Raises ``OSError`` if it cannot ask."""
        ...


class SubprocessRunner:
    """The real runner."""

    def run(self, argv: Sequence[str], timeout: float, stdin: str | None = None) -> CommandResult:
        try:
            done = subprocess.run(
                list(argv),
                input=stdin,
                # Without input, the child gets an empty stdin rather than the agent's own:
                # `nft -f -` would otherwise wait on it until the timeout.
                stdin=subprocess.DEVNULL if stdin is None else None,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            # subprocess.run kills the child on timeout before raising.
            return CommandResult(124, "", f"timed out after {timeout:.2f} s")
        except OSError as exc:
            return CommandResult(127, "", str(exc))
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def set_address(
        self, interface: str, cidr: str, lifetime: int | None, timeout: float
    ) -> CommandResult:
        address, _, prefix = cidr.partition("/")
        try:
            netlink.set_address(interface, address, int(prefix), lifetime, timeout)
        except OSError as exc:
            return CommandResult(1, "", f"setting {cidr} on {interface}: {exc.strerror or exc}")
        return CommandResult(0)

    def address_owner(self, interface: str, address: str) -> str | None:
        return find_address_owner(interface, address)
