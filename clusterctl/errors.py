"""Errors a user can act on: a one-line reason plus a hint, never a traceback."""

from __future__ import annotations


class ClusterctlError(Exception):
    """A failure the operator can fix; the CLI prints `error: <message>` and `hint: <hint>`."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message
