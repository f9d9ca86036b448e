"""Run-wide rules of the test suite.

With CI=true a skipped test fails the run unless it is listed, with its reason, in
tests/allowed-skips.txt (which `make test` prints): a test that skips on a fresh machine
does not exist, and CI runs on one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ALLOWED_SKIPS = Path(__file__).with_name("allowed-skips.txt")


def _allowed() -> dict[str, str]:
    """Test id (or id prefix) -> reason, from ALLOWED_SKIPS (`ID  # reason` lines)."""
    allowed = {}
    for line in ALLOWED_SKIPS.read_text().splitlines():
        test_id, _, reason = line.partition("#")
        if test_id.strip():
            allowed[test_id.strip()] = reason.strip()
    return allowed


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def _unexpected() -> list[str]:
    allowed = _allowed()
    return [t for t in _skipped if not any(t.startswith(a) for a in allowed)]


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's own type
    unexpected = _unexpected()
    if unexpected and os.environ.get("CI") == "true":
        terminalreporter.section("skipped tests not in tests/allowed-skips.txt (CI fails)")
        for test_id in unexpected:
            terminalreporter.line(test_id)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") == "true" and _unexpected() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
