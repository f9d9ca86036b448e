"""Progress and messages go through a reporter so the library never prints by itself."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class Reporter(Protocol):
    """Where the library sends human-facing messages (the CLI renders them on stderr)."""

    def info(self, message: str) -> None: ...

    def progress(self, message: str, transient: bool = False) -> None:
        """A step of long work; transient steps may be dropped where they cannot be redrawn."""
        ...

    def warn(self, message: str) -> None: ...


class StderrReporter:
    """Writes messages to stderr; progress lines overwrite each other on a terminal."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._tty = self.stream.isatty()
        self._progress_open = False
        self._start = time.monotonic()

    def _close_progress(self) -> None:
        if self._progress_open:
            self.stream.write("\n")
            self._progress_open = False

    def info(self, message: str) -> None:
        if self.quiet:
            return
        self._close_progress()
        self.stream.write(f"{message}\n")
        self.stream.flush()

    def warn(self, message: str) -> None:
        self._close_progress()
        self.stream.write(f"warning: {message}\n")
        self.stream.flush()

    def progress(self, message: str, transient: bool = False) -> None:
        if self.quiet or (transient and not self._tty):
            return
        elapsed = time.monotonic() - self._start
        line = f"[{elapsed:5.1f}s] {message}"
        if self._tty:
            self.stream.write("\r\033[K" + line[:200])
            self._progress_open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


class ListReporter:
    """Collects messages in memory; for tests and for callers that render them later."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.messages.append(("info", message))

    def progress(self, message: str, transient: bool = False) -> None:
        self.messages.append(("progress", message))

    def warn(self, message: str) -> None:
        self.messages.append(("warn", message))
