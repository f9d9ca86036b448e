"""ansible-runner adapter: runs a playbook, turns its events into progress and a recap.

The library never parses Ansible's text output: it follows runner events, so progress
(play, task, hosts done), failures (host, task, module message) and the per-host recap
come from structured data.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterctl.errors import ClusterctlError
from clusterctl.paths import ANSIBLE_CFG, PROJECT_ROOT, playbook
from clusterctl.reporter import Reporter


@dataclass(frozen=True)
class HostRecap:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    message: str
    unreachable: bool = False

    def sentence(self) -> str:
        what = "unreachable" if self.unreachable else "failed"
        return f"{self.host} {what} at task '{self.task}': {self.message}"


@dataclass(frozen=True)
class TaskChange:
    """A task that changed (or, in check mode, would change) a host; ``diff`` is a unified
    diff when Ansible reported one (run with diff)."""

    host: str
    task: str
    diff: str = ""


@dataclass
class ManagedState:
    """What a converge manages on one host, as its task results name it: the files,
    directories and links of file-writing tasks, the units it keeps running
    (clusterctl/convergence.py digests them later)."""

    paths: set[str] = field(default_factory=set)
    units: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, list[str]]:
        return {"paths": sorted(self.paths), "units": sorted(self.units)}


# Modules whose results name a file they manage (``dest`` or ``path``), and those whose
# results name a unit they keep in a state.
_FILE_ACTIONS = {"ansible.builtin.copy", "ansible.builtin.template", "ansible.builtin.file"}
_UNIT_ACTIONS = {"ansible.builtin.systemd_service", "ansible.builtin.systemd"}
_RUNNING = {"started", "restarted", "reloaded"}


@dataclass
class PlaybookResult:
    playbook: str
    rc: int
    status: str
    recap: dict[str, HostRecap] = field(default_factory=dict)
    failures: list[TaskFailure] = field(default_factory=list)
    changes: list[TaskChange] = field(default_factory=list)
    managed: dict[str, ManagedState] = field(default_factory=dict)
    # each host's digest items of a node_digest task (playbooks/digest.yml): what -> hash
    digests: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.status == "successful"

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.recap.values())

    def recap_lines(self) -> list[str]:
        return [
            f"{host:<12} ok={r.ok:<3} changed={r.changed:<3} failed={r.failed:<3} "
            f"unreachable={r.unreachable:<3} skipped={r.skipped}"
            for host, r in sorted(self.recap.items())
        ]


class _ProgressTracker:
    """Follows runner events; keeps the current play and task and which hosts finished it."""

    def __init__(
        self, reporter: Reporter, host_count: int, expected_tasks: int | None = None
    ) -> None:
        self.reporter = reporter
        self.host_count = host_count
        self.expected_tasks = expected_tasks  # the last complete run's count, if known
        self.play = ""
        self.task = ""
        self.task_number = 0
        self.done: set[str] = set()
        self.failures: list[TaskFailure] = []
        self.changes: list[TaskChange] = []
        self.managed: dict[str, ManagedState] = {}
        self.digests: dict[str, dict[str, str]] = {}
        self.stats: dict[str, Any] = {}

    def __call__(self, event: Mapping[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {}) or {}
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "")
            self.reporter.progress(f"play: {self.play}")
        elif kind == "playbook_on_task_start":
            self.task = data.get("task", "")
            self.task_number += 1
            self.done = set()
            self.reporter.progress(self._line(hosts=False))
        elif kind in (
            "runner_on_ok",
            "runner_on_skipped",
            "runner_on_failed",
            "runner_on_unreachable",
        ):
            host = data.get("host", "?")
            self.done.add(host)
            res = data.get("res", {}) or {}
            if kind == "runner_on_ok":
                if res.get("changed"):
                    task = data.get("task", self.task)
                    self.changes.append(TaskChange(host, task, _unified(res.get("diff"))))
                self._note_managed(host, str(data.get("task_action", "")), res)
            if kind == "runner_on_failed" and not data.get("ignore_errors"):
                self.failures.append(TaskFailure(host, data.get("task", self.task), _message(data)))
            elif kind == "runner_on_unreachable":
                self.failures.append(
                    TaskFailure(host, data.get("task", self.task), _message(data), unreachable=True)
                )
            self.reporter.progress(self._line(), transient=True)
        elif kind == "playbook_on_stats":
            self.stats = data
        return True  # keep the event in the artifacts

    def _note_managed(self, host: str, action: str, res: Mapping[str, Any]) -> None:
        if action.endswith("node_digest") and isinstance(res.get("items"), Mapping):
            self.digests[host] = {str(k): str(v) for k, v in res["items"].items()}
            return
        managed = self.managed.setdefault(host, ManagedState())
        for item in [res, *(r for r in res.get("results") or () if isinstance(r, Mapping))]:
            if action in _FILE_ACTIONS:
                path = item.get("dest") or item.get("path")
                if isinstance(path, str) and path.startswith("/"):
                    managed.paths.add(path)
            elif (
                action in _UNIT_ACTIONS
                and item.get("state") in _RUNNING
                and isinstance(item.get("name"), str)
            ):
                managed.units.add(item["name"])

    def _line(self, hosts: bool = True) -> str:
        """``play > task 12/40: name (2/3 hosts done)``: the total is the last complete run's
        (tasks are the same from run to run, but for includes), the hosts as they finish
        (only on a terminal, where the line is redrawn; a pipe gets one line per task)."""
        total = self.expected_tasks
        number = (
            f"{self.task_number}/{total}"
            if total and self.task_number <= total
            else (str(self.task_number))
        )
        line = f"{self.play} > task {number}: {self.task}"
        if hosts:
            line += f" ({len(self.done)}/{self.host_count} hosts done)"
        return line


class PlaybookFailed(ClusterctlError):
    """A playbook failed; carries the result so the caller can still show the recap."""

    def __init__(self, message: str, hint: str, result: PlaybookResult) -> None:
        super().__init__(message, hint)
        self.result = result


def _message(data: Mapping[str, Any]) -> str:
    res = data.get("res", {}) or {}
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    detail = res.get("stderr") or ""
    if detail and detail not in msg:
        msg = f"{msg} ({detail})" if msg else detail
    if not msg and res.get("results"):
        msg = "; ".join(str(r.get("msg", "")) for r in res["results"] if r.get("failed"))
    text = " ".join(str(msg).split())
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
        # ssh's warning banner fills any length we keep; say what it means instead
        return "Host key verification failed: its SSH host key differs from the recorded one"
    return text[:400] or "no message"


def _unified(diff: Any) -> str:
    """Ansible's diff (one dict or a list of them: before/after texts and headers, or an
    already prepared text) as one unified diff."""
    parts = diff if isinstance(diff, list) else [diff] if diff else []
    out: list[str] = []
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        if part.get("prepared"):
            out.append(str(part["prepared"]).rstrip("\n"))
            continue
        before, after = part.get("before", ""), part.get("after", "")
        if not isinstance(before, str) or not isinstance(after, str) or before == after:
            continue
        out.extend(
            line.rstrip("\n")
            for line in difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                fromfile=str(part.get("before_header", "before")),
                tofile=str(part.get("after_header", "after")),
            )
        )
    return "\n".join(out)


def _recap(stats: Mapping[str, Any]) -> dict[str, HostRecap]:
    hosts: set[str] = set()
    for key in ("ok", "changed", "failures", "dark", "skipped", "processed"):
        hosts.update((stats.get(key) or {}).keys())
    recap = {}
    for host in hosts:
        recap[host] = HostRecap(
            ok=(stats.get("ok") or {}).get(host, 0),
            changed=(stats.get("changed") or {}).get(host, 0),
            failed=(stats.get("failures") or {}).get(host, 0),
            unreachable=(stats.get("dark") or {}).get(host, 0),
            skipped=(stats.get("skipped") or {}).get(host, 0),
        )
    return recap


def _read_counts(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def _write_count(path: Path, key: str, count: int) -> None:
    counts = _read_counts(path)
    if counts.get(key) != count:
        counts[key] = count
        with contextlib.suppress(OSError):
            path.write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def signals_cancel() -> Iterator[Callable[[], bool]]:
    """While a playbook runs, SIGINT and SIGTERM cancel it (ansible-runner stops
    ansible-playbook when the callback says so) and afterwards reach this process as they
    would have. Left to itself, ansible-runner installs handlers that only set a flag and
    keeps them after the run: every later SIGTERM was swallowed (a benchmark ignored `kill`)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False  # only the main thread may set handlers; the default applies
        return
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        yield lambda: bool(received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        signal.raise_signal(received[0])


def run_playbook(
    name: str,
    inventory: Path,
    work_dir: Path,
    reporter: Reporter,
    host_count: int,
    extravars: Mapping[str, Any] | None = None,
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
) -> PlaybookResult:
    """Run playbooks/<name> against an inventory; raise ClusterctlError naming the failure."""
    import ansible_runner  # imported late: it is slow to import and only `up` needs it

    work_dir.mkdir(parents=True, exist_ok=True)
    # ansible-runner keeps per-run artifacts (only the last run is worth keeping) and writes
    # the envvars/extravars of a run into env/, where the next run would read them back.
    for stale in ("artifacts", "env", "inventory"):
        shutil.rmtree(work_dir / stale, ignore_errors=True)
    counts_file = work_dir / "task-counts.json"
    count_key = f"{name}{' --check' if check else ''}"
    tracker = _ProgressTracker(reporter, host_count, _read_counts(counts_file).get(count_key))
    cmdline = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on) or None
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        # ansible-runner looks up ansible-playbook in this process's PATH
        os.environ["PATH"] = os.pathsep.join([venv_bin, os.environ.get("PATH", "")])
    envvars = {
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        # ansible-runner turns host-key checking off unless told otherwise, and Ansible's
        # `-o StrictHostKeyChecking=no` then wins over the inventory's `=yes`
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    }
    with signals_cancel() as cancelled:
        result = ansible_runner.run(
            private_data_dir=str(work_dir),
            project_dir=str(PROJECT_ROOT),
            playbook=str(playbook(name)),
            inventory=str(inventory),
            extravars=dict(extravars or {}),
            limit=limit,
            cmdline=cmdline,
            envvars=envvars,
            event_handler=tracker,
            cancel_callback=cancelled,
            quiet=True,
            rotate_artifacts=1,
        )
    outcome = PlaybookResult(
        playbook=name,
        rc=result.rc if result.rc is not None else -1,
        status=result.status,
        recap=_recap(tracker.stats),
        failures=tracker.failures,
        changes=tracker.changes,
        managed=tracker.managed,
        digests=tracker.digests,
    )
    if outcome.ok:
        _write_count(counts_file, count_key, tracker.task_number)
    if not outcome.ok:
        if outcome.failures:
            first = outcome.failures[0]
            raise PlaybookFailed(
                first.sentence(),
                f"fix the cause and run again; full log in {work_dir / 'artifacts'}",
                outcome,
            )
        raise PlaybookFailed(
            f"ansible-playbook {name} ended with status {outcome.status} (rc {outcome.rc})",
            f"see the log in {work_dir / 'artifacts'}",
            outcome,
        )
    return outcome
