"""The clusterctl command line: a thin layer over clusterctl.cluster.

Data goes to stdout (`--json` where it is data); messages and progress go to stderr.
A user error prints one line with a hint and exits non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from clusterctl import __version__
from clusterctl.cli import (
    backend,
    bench,
    chaos,
    down,
    failover,
    fence,
    history,
    hpc,
    scale,
    status,
    token,
    up,
)
from clusterctl.errors import ClusterctlError
from clusterctl.reporter import StderrReporter

COMMANDS = [up, down, status, history, failover, fence, backend, scale, hpc, token, chaos, bench]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and a hint instead of usage spam
        sys.stderr.write(f"error: {message}\nhint: see `{self.prog} --help`\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clusterctl",
        description="Build Linux clusters with Ansible and keep their services available.",
    )
    parser.add_argument("--version", action="version", version=f"clusterctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reporter = StderrReporter(quiet=getattr(args, "quiet", False))
    try:
        return int(args.func(args, reporter) or 0)
    except ClusterctlError as exc:
        sys.stderr.write(f"\nerror: {exc.message}\n" if reporter._progress_open else "")
        if not reporter._progress_open:
            sys.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        return 1
    except BrokenPipeError:  # `clusterctl status | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return 0
    except OSError as exc:  # e.g. a state directory we may not write: still one line
        where = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"error: {exc.strerror or exc}{where}\n")
        sys.stderr.write("hint: check permissions and free space, or set CLUSTERCTL_STATE_DIR\n")
        return 1
    except KeyboardInterrupt:
        cluster = getattr(args, "cluster", "demo")
        sys.stderr.write(
            f"\ninterrupted; `clusterctl down --cluster {cluster}` removes what was made\n"
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
