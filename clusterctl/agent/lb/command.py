"""The LB's error type, and ``check`` for a command that must succeed."""

from __future__ import annotations

from collections.abc import Sequence

from clusterctl.agent.resources.base import ResourceError
from clusterctl.agent.resources.runner import CommandResult


class LbError(ResourceError):
    """An LB operation failed (a command, the HAProxy runtime API). One line for humans."""


def check(result: CommandResult, argv: Sequence[str]) -> CommandResult:
    """Return ``result`` if it succeeded, else raise ``LbError`` with its last error line."""
    if not result.ok:
        detail = (result.stderr or result.stdout).strip().splitlines()
        tail = detail[-1] if detail else ""
        raise LbError(f"{' '.join(argv)} failed (rc {result.rc}) {tail}".strip())
    return result
