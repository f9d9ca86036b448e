"""Running commands: the one place where resources touch the system.

Resources never call ``subprocess`` themselves; they get a ``CommandRunner``. Unit tests pass a
fake runner that records commands and simulates their results.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


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
    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run ``argv`` (no shell); return within about ``timeout`` seconds, killing it if
        needed. Never raises for a failing or missing command: that is a non-zero ``rc``."""
        ...


class SubprocessRunner:
    """The real runner."""

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            # subprocess.run kills the child on timeout before raising.
            return CommandResult(124, "", f"timed out after {timeout:.2f} s")
        except OSError as exc:
            return CommandResult(127, "", str(exc))
        return CommandResult(done.returncode, done.stdout, done.stderr)
