"""Commands that read their standard input (``nft -f -``), and the LB's error type.

The agent's ``CommandRunner`` has no stdin. Rather than writing the nft script to a temporary
file (a second place that can fail and must be cleaned up), the LB takes an ``InputRunner``:
the same contract plus an optional ``stdin`` text. ``SubprocessInputRunner`` is a drop-in
replacement for ``SubprocessRunner`` that also satisfies ``CommandRunner``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Protocol

from clusterctl.agent.resources.base import ResourceError
from clusterctl.agent.resources.runner import CommandResult


class LbError(ResourceError):
    """An LB operation failed (a command, the HAProxy runtime API). One line for humans."""


class InputRunner(Protocol):
    def run(self, argv: Sequence[str], timeout: float, stdin: str | None = None) -> CommandResult:
        """Like ``CommandRunner.run``; ``stdin`` (if given) is written to the command's
        standard input, which is then closed. Never raises for a failing or missing command."""
        ...


class SubprocessInputRunner:
    """The real runner, with stdin."""

    def run(self, argv: Sequence[str], timeout: float, stdin: str | None = None) -> CommandResult:
        try:
            done = subprocess.run(
                list(argv),
                input=stdin,
                # Without input, give the child an empty stdin rather than the agent's own:
                # `nft -f -` would otherwise wait on it until the timeout.
                stdin=subprocess.DEVNULL if stdin is None else None,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return CommandResult(124, "", f"timed out after {timeout:.2f} s")
        except OSError as exc:
            return CommandResult(127, "", str(exc))
        return CommandResult(done.returncode, done.stdout, done.stderr)


def check(result: CommandResult, argv: Sequence[str]) -> CommandResult:
    """Return ``result`` if it succeeded, else raise ``LbError`` with its last error line."""
    if not result.ok:
        detail = (result.stderr or result.stdout).strip().splitlines()
        tail = detail[-1] if detail else ""
        raise LbError(f"{' '.join(argv)} failed (rc {result.rc}) {tail}".strip())
    return result
