"""Prometheus metrics of one agent: counters the loop updates, and the text-format renderer.

The loop thread updates ``Metrics`` (under a lock); the API thread renders them together with
the agent's immutable snapshot. Nothing here does I/O. Format: Prometheus text 0.0.4.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Renewal latency buckets (seconds): a renewal must finish well within renew_timeout (0.25 s).
RENEW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class MetricsSnapshot:
    """A consistent copy of the counters."""

    acquisitions: dict[str, int]
    fencings: int
    renew_buckets: tuple[int, ...]  # cumulative counts per RENEW_BUCKETS bound
    renew_count: int
    renew_sum: float
    fence_devices_ok: int = 0  # fences of other nodes through their devices, by result
    fence_devices_failed: int = 0


class Metrics:
    """Counters of one agent. Thread-safe: every method takes the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acquisitions: dict[str, int] = {}
        self._fencings = 0
        self._fence_attempts: dict[bool, int] = {}
        self._buckets = [0] * len(RENEW_BUCKETS)
        self._renew_count = 0
        self._renew_sum = 0.0

    def acquired(self, group: str) -> None:
        with self._lock:
            self._acquisitions[group] = self._acquisitions.get(group, 0) + 1

    def fenced(self) -> None:
        with self._lock:
            self._fencings += 1

    def fence_attempt(self, ok: bool) -> None:
        """A fence of another node through its device ended (``ok``: it is off)."""
        with self._lock:
            self._fence_attempts[ok] = self._fence_attempts.get(ok, 0) + 1

    def observe_renewal(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        with self._lock:
            for i, bound in enumerate(RENEW_BUCKETS):
                if seconds <= bound:
                    self._buckets[i] += 1
            self._renew_count += 1
            self._renew_sum += seconds

    def snapshot(self) -> MetricsSnapshot:
        with self._lock:
            return MetricsSnapshot(
                dict(self._acquisitions),
                self._fencings,
                tuple(self._buckets),
                self._renew_count,
                self._renew_sum,
                self._fence_attempts.get(True, 0),
                self._fence_attempts.get(False, 0),
            )


# -- rendering -----------------------------------------------------------------------------


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Writer:
    def __init__(self, common: dict[str, str]) -> None:
        self.common = common
        self.lines: list[str] = []

    def family(self, name: str, kind: str, text: str) -> None:
        self.lines.append(f"# HELP {name} {text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        merged = {**self.common, **labels}
        body = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in merged.items())
        self.lines.append(f"{name}{{{body}}} {format_value(value)}")


@dataclass(frozen=True)
class GroupState:
    """What the renderer needs of one group (taken from the agent's snapshot)."""

    name: str
    holder: str | None
    running_here: bool
    failcounts: tuple[tuple[str, int], ...] = ()


def render(
    cluster: str,
    node: str,
    counters: MetricsSnapshot,
    groups: Iterable[GroupState],
    lease_time_left: float,
    members_online: int,
    quorum: bool,
) -> str:
    """The Prometheus text exposition (format 0.0.4); every sample is labelled ``cluster``
    and ``node`` (the answering node)."""
    groups = list(groups)
    w = _Writer({"cluster": cluster, "node": node})
    w.family("clusterctl_group_holder", "gauge", "1 for the node that holds the group.")
    for g in groups:
        if g.holder:
            w.sample("clusterctl_group_holder", 1, group=g.name, holder=g.holder)
    w.family("clusterctl_group_running", "gauge", "1 if the group runs on this node.")
    for g in groups:
        w.sample("clusterctl_group_running", int(g.running_here), group=g.name)
    w.family("clusterctl_failovers_total", "counter", "Acquisitions of the group by this node.")
    names = sorted({g.name for g in groups} | set(counters.acquisitions))
    for name in names:
        w.sample("clusterctl_failovers_total", counters.acquisitions.get(name, 0), group=name)
    w.family("clusterctl_fencings_total", "counter", "Self-fencings of this node.")
    w.sample("clusterctl_fencings_total", counters.fencings)
    w.family(
        "clusterctl_fence_device_total", "counter", "Fences of other nodes through their devices."
    )
    w.sample("clusterctl_fence_device_total", counters.fence_devices_ok, result="ok")
    w.sample("clusterctl_fence_device_total", counters.fence_devices_failed, result="failed")
    w.family("clusterctl_lease_renew_seconds", "histogram", "Latency of lease renewals.")
    for bound, count in zip(RENEW_BUCKETS, counters.renew_buckets, strict=True):
        w.sample("clusterctl_lease_renew_seconds_bucket", count, le=format_value(bound))
    w.sample("clusterctl_lease_renew_seconds_bucket", counters.renew_count, le="+Inf")
    w.sample("clusterctl_lease_renew_seconds_sum", counters.renew_sum)
    w.sample("clusterctl_lease_renew_seconds_count", counters.renew_count)
    w.family(
        "clusterctl_lease_time_left_seconds", "gauge", "Time left before the fencing deadline."
    )
    w.sample("clusterctl_lease_time_left_seconds", max(0.0, float(lease_time_left)))
    w.family("clusterctl_group_failcount", "gauge", "Failures of the group on node `on`.")
    for g in groups:
        for on, count in g.failcounts:
            w.sample("clusterctl_group_failcount", count, group=g.name, on=on)
    w.family("clusterctl_members_online", "gauge", "Live members seen by this node.")
    w.sample("clusterctl_members_online", members_online)
    w.family("clusterctl_quorum", "gauge", "1 if this node's last loop iteration reached etcd.")
    w.sample("clusterctl_quorum", int(quorum))
    return "\n".join(w.lines) + "\n"
