"""Fencing devices: power a node off before a group on shared storage starts elsewhere.

Self-fencing (agent/ha.py) stops a holder's resources before its lease can expire; that is
enough for a VIP, not for a service that writes shared data: a frozen holder wakes with its
service still running and may write in the moments before its agent stops it. A group with
``fencing: required`` is therefore started on a new node only after its previous owner (the
``groups/<g>/owner`` key: the node whose resources may be running; see ``Keys.owner``) was
powered off through that node's fence device, or said itself that they are stopped, or an
operator confirmed it is off (``clusterctl fence NODE --confirm``).

A device is one of Debian's fence agents (``fence_ipmilan``, ``fence_redfish``; the sandbox's
``fence_docker`` against clusterctl/fenced.py), run with its options on stdin — never on a
command line — and its credentials read from a file of mode 0600 and appended there.

A fence takes seconds (a BMC, a power-off to confirm), far longer than the loop may block
(the lease is renewed every 0.2 s), so it runs in a thread of its own; the loop asks
``Fencer.outcome`` on every step, holding the group's leader key meanwhile so no other node
fences or starts it too.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

FENCE_AGENT_DIR = Path("/usr/sbin")
RETRY_INTERVAL = 5.0  # seconds between attempts after a failed fence


class FenceError(Exception):
    """A fence device could not power the node off (or did not answer)."""


class FenceDevice(Protocol):
    """Power control of one node."""

    def off(self, timeout: float) -> str:
        """Power the node off and wait until the device reports it off; a sentence on
        success (``FenceError`` otherwise). Off already is success."""
        ...

    def status(self, timeout: float) -> str:
        """``on`` or ``off`` as the device reports it (``FenceError`` if it cannot say)."""
        ...


@dataclass(frozen=True)
class FenceAgentDevice:
    """One of Debian's fence agents (``agent``: fence_docker, fence_ipmilan, ...).

    ``options`` are the agent's long options without dashes (``ip``, ``plug``, ``ssl_secure``,
    ...; see the agent's ``-o metadata``); ``secrets_file`` holds further ``name=value`` lines
    (a password) and must be mode 0600. All of it goes to the agent's stdin.
    """

    agent: str
    options: Mapping[str, str] = field(default_factory=dict)
    secrets_file: str = ""
    agent_dir: Path = FENCE_AGENT_DIR
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run

    def _stdin(self, action: str) -> str:
        lines = [f"action={action}"]
        lines += [f"{key}={value}" for key, value in sorted(self.options.items())]
        if self.secrets_file:
            lines += read_secrets(self.secrets_file)
        return "\n".join(lines) + "\n"

    def _call(self, action: str, timeout: float) -> subprocess.CompletedProcess[str]:
        binary = self.agent_dir / self.agent
        if not binary.is_file():
            raise FenceError(f"{binary} is not installed")
        try:
            return self.run(
                [str(binary)],
                input=self._stdin(action),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            late = f"{self.agent} {action} did not finish within {timeout:.0f} s"
            raise FenceError(late) from None
        except OSError as exc:
            raise FenceError(f"{self.agent} could not run: {exc}") from None

    def off(self, timeout: float) -> str:
        proc = self._call("off", timeout)
        if proc.returncode != 0:
            raise FenceError(f"{self.agent} off failed: {_last_line(proc)}")
        return f"{self.agent}: off"

    def status(self, timeout: float) -> str:
        proc = self._call("status", timeout)
        # fence agents: 0 = on, 2 = off, anything else = could not tell
        if proc.returncode == 0:
            return "on"
        if proc.returncode == 2:
            return "off"
        raise FenceError(f"{self.agent} status failed: {_last_line(proc)}")


def read_secrets(path: str) -> list[str]:
    """``name=value`` lines of a credentials file, which must be ours and mode 0600."""
    try:
        info = os.stat(path)
        if info.st_mode & 0o077:
            raise FenceError(f"{path} must be mode 0600 (it is {info.st_mode & 0o777:o})")
        text = Path(path).read_text()
    except OSError as exc:
        raise FenceError(f"cannot read {path}: {exc.strerror or exc}") from None
    return [line.strip() for line in text.splitlines() if "=" in line and line.strip()]


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    # fence agents prefix their errors with "ERROR:"; never echo what looks like a secret
    line = lines[-1] if lines else f"exit {proc.returncode}"
    return line if "password" not in line.lower() else f"exit {proc.returncode}"


def device_from_config(data: Mapping[str, Any]) -> FenceAgentDevice:
    """A device from the agent config's ``fence_devices[node]`` (validated there)."""
    return FenceAgentDevice(
        agent=str(data["agent"]),
        options={str(k): str(v) for k, v in dict(data.get("options") or {}).items()},
        secrets_file=str(data.get("secrets_file") or ""),
    )


def devices_from_config(devices: Mapping[str, Mapping[str, Any]]) -> dict[str, FenceAgentDevice]:
    """Each node's device from the agent config's ``fence_devices`` (at start and reload)."""
    return {node: device_from_config(data) for node, data in devices.items()}


@dataclass(frozen=True)
class FenceOutcome:
    """How one fence ended: ``ok``, a sentence (or the error), when, how long it took."""

    node: str
    ok: bool
    detail: str
    at: float
    took: float


class Fencer:
    """Runs fences in the background, one at a time per node.

    ``begin(node)`` starts one unless it is running; the loop polls ``outcome(node)`` each
    step (None while running or before the first), and ``forget(node)`` once it acted on it.
    """

    def __init__(
        self,
        devices: Mapping[str, FenceDevice],
        timeout: float,
        clock: Callable[[], float] = time.time,
        background: bool = True,
    ) -> None:
        self.devices = dict(devices)
        self.timeout = timeout
        self.clock = clock
        self.background = background  # False: ``begin`` runs the fence itself (tests)
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._outcomes: dict[str, FenceOutcome] = {}

    def set_devices(self, devices: Mapping[str, FenceDevice]) -> None:
        """Fence with these devices from now on (a node added to the cluster brings its
        own); a fence already running keeps the device it began with."""
        with self._lock:
            self.devices = dict(devices)

    def begin(self, node: str) -> None:
        with self._lock:
            if node in self._running:
                return
            self._running.add(node)
            self._outcomes.pop(node, None)
        if self.background:
            worker = threading.Thread(
                target=self._fence, args=(node,), name=f"fence-{node}", daemon=True
            )
            worker.start()
        else:
            self._fence(node)

    def running(self, node: str) -> bool:
        with self._lock:
            return node in self._running

    def outcome(self, node: str) -> FenceOutcome | None:
        with self._lock:
            return self._outcomes.get(node)

    def forget(self, node: str) -> None:
        with self._lock:
            self._outcomes.pop(node, None)

    def _fence(self, node: str) -> None:
        began = self.clock()
        with self._lock:
            device = self.devices.get(node)
        try:
            if device is None:
                raise FenceError(f"no fence device is configured for {node}")
            detail, ok = device.off(self.timeout), True
        except FenceError as exc:
            detail, ok = str(exc), False
        except Exception as exc:  # noqa: BLE001 - a device bug is a failed fence, not a crash
            detail, ok = f"{type(exc).__name__}: {exc}", False
        outcome = FenceOutcome(node, ok, detail, began, self.clock() - began)
        with self._lock:
            self._outcomes[node] = outcome
            self._running.discard(node)
