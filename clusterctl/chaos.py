"""`clusterctl chaos`: random faults on a running sandbox cluster, and a verdict.

The shape of Jepsen and Pacemaker's CTS, for clusterctl's own promise: while a client asks the
VIP every 20 ms and every node is sampled every 50 ms for the VIP, faults drawn at random (by
``--seed``) are injected one at a time into random nodes, each held for a random while and
healed; the next one comes once the cluster is healthy again. At the end everything is healed
and the run checks:

* safety: no sample in which two nodes held the VIP; no configuration lost (backend weights and
  states, bans, standby flags are what they were before the run);
* liveness: the cluster converged (all nodes online, one holder, quorum) within 120 s;
* the record: every change of holder the samples saw has an ``acquired`` entry in the history.

It reports faults per kind, each fault's outage (median / max per kind) and failed requests,
as JSON, a table and a timeline picture (SVG). Exit 1 on any violation.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clusterctl import cluster as api
from clusterctl.agent.history import HistoryEntry
from clusterctl.agent.tls import TlsFiles
from clusterctl.agentclient import unhealthy
from clusterctl.bench.prober import Prober, Sample
from clusterctl.bench.sandbox import HolderSampler, node_pids
from clusterctl.errors import ClusterctlError
from clusterctl.faults import KINDS, LASTING, SandboxFaults
from clusterctl.profiles import AGENT_PROFILES
from clusterctl.providers.podman_cli import Podman
from clusterctl.reporter import Reporter
from clusterctl.state import ClusterRecord, StateDir
from clusterctl.trust import cluster_ca

GROUP = "web"
MAX_DURATION = 24 * 3600.0
HEALTHY_WAIT = 90.0  # seconds a healed fault may take before the run calls it stuck
CONVERGE_WAIT = 120.0  # seconds the cluster has to converge after the last heal


@dataclass(frozen=True)
class ChaosOptions:
    cluster: str
    duration: float = 600.0
    seed: int | None = None
    faults: tuple[str, ...] | None = None  # None: every kind the cluster's profile has
    rate: float = 6.0  # faults per minute at most (the next waits for a healthy cluster)
    hold: tuple[float, float] = (1.0, 6.0)  # a lasting fault is healed after this long
    out: Path | None = None


@dataclass(frozen=True)
class FaultRecord:
    kind: str
    node: str
    injected_s: float  # seconds since the run started
    healed_s: float
    healthy_s: float | None  # when the cluster was healthy again (None: not within the wait)
    holder_before: str
    holder_after: str
    outage_s: float  # longest time without an answer while the fault lasted (longest_gap)
    failed_requests: int


@dataclass
class ChaosReport:
    cluster: str
    profile: str
    seed: int
    duration_s: float
    faults: list[FaultRecord] = field(default_factory=list)
    requests: int = 0
    failed_requests: int = 0
    holder_samples: int = 0
    dual_holder_samples: int = 0
    dual_holders: list[tuple[float, list[str]]] = field(default_factory=list)  # first 20
    sampler_error: str = ""  # the VIP sampler stopped early: its samples do not cover the run
    converged: bool = False
    converge_s: float | None = None
    lost_configuration: list[str] = field(default_factory=list)
    holder_changes: int = 0
    history_acquired: int = 0
    history_missing: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def violations(self) -> list[str]:
        found = []
        if self.dual_holder_samples:
            first = self.dual_holders[0] if self.dual_holders else None
            where = f" (first at {first[0]:.1f} s: {', '.join(first[1])})" if first else ""
            found.append(f"{self.dual_holder_samples} samples with two VIP holders{where}")
        if self.sampler_error:
            found.append(f"the VIP sampler stopped early ({self.sampler_error})")
        if self.lost_configuration:
            found.append("configuration lost: " + "; ".join(self.lost_configuration))
        if not self.converged:
            found.append(f"the cluster did not converge within {CONVERGE_WAIT:.0f} s")
        if self.history_missing:
            found.append("history misses: " + "; ".join(self.history_missing))
        return found

    @property
    def verdict(self) -> str:
        return "FAIL" if self.violations else "PASS"

    def per_kind(self) -> list[dict[str, Any]]:
        rows = []
        for kind in KINDS:
            of_kind = [f for f in self.faults if f.kind == kind]
            if not of_kind:
                continue
            outages = [f.outage_s for f in of_kind]
            rows.append(
                {
                    "fault": kind,
                    "injected": len(of_kind),
                    "outage_median_s": round(statistics.median(outages), 3),
                    "outage_max_s": round(max(outages), 3),
                    "failed_requests": sum(f.failed_requests for f in of_kind),
                    "recovered": sum(1 for f in of_kind if f.healthy_s is not None),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(verdict=self.verdict, violations=self.violations, per_kind=self.per_kind())
        return data

    def to_table(self) -> str:
        lines = [
            "| fault | injected | outage median / max (s) | failed requests | recovered |",
            "|---|---|---|---|---|",
        ]
        for r in self.per_kind():
            lines.append(
                f"| {r['fault']} | {r['injected']} | {r['outage_median_s']:.3f} / "
                f"{r['outage_max_s']:.3f} | {r['failed_requests']} | "
                f"{r['recovered']}/{r['injected']} |"
            )
        converged = f"yes, in {self.converge_s:.1f} s" if self.converged else "NO"
        lines += [
            "",
            f"chaos on {self.cluster} ({self.profile}), seed {self.seed}, "
            f"{self.duration_s:.0f} s: {len(self.faults)} faults",
            f"requests: {self.requests:,}, failed {self.failed_requests:,}",
            f"two-holder samples: {self.dual_holder_samples} of {self.holder_samples:,}",
            f"converged: {converged}",
            f"configuration lost: {', '.join(self.lost_configuration) or 'none'}",
            f"holder changes seen: {self.holder_changes}, acquired in history: "
            f"{self.history_acquired}, missing: {len(self.history_missing)}",
            f"verdict: {self.verdict}"
            + (f" ({'; '.join(self.violations)})" if self.violations else ""),
        ]
        return "\n".join(lines)


def check_options(options: ChaosOptions, record: ClusterRecord) -> None:
    """Every reason not to start, as one line each: nothing is injected before these pass."""
    faults = options.faults if options.faults is not None else default_faults(record)
    unknown = [f for f in faults if f not in KINDS]
    if unknown or not faults:
        raise ClusterctlError(
            f"unknown fault {unknown[0]!r}" if unknown else "no faults given",
            f"choose from: {', '.join(KINDS)}",
        )
    if not 0 < options.duration <= MAX_DURATION:
        raise ClusterctlError(
            f"--duration {options.duration:g} is out of range", "give seconds, 1 to 86400"
        )
    if not 0 < options.rate <= 60:
        raise ClusterctlError(
            f"--rate {options.rate:g} is out of range", "faults per minute, up to 60"
        )
    if record.provider != "podman":
        raise ClusterctlError(
            f"cluster {record.name} runs on the {record.provider} provider",
            "chaos crashes and freezes machines: it runs on podman sandbox clusters only",
        )
    if record.profile not in AGENT_PROFILES:
        raise ClusterctlError(
            f"cluster {record.name} runs profile {record.profile}: no VIP to fail over",
            "run chaos on an ha or lb cluster",
        )
    if "backend-kill" in faults and record.profile != "lb":
        raise ClusterctlError("fault backend-kill needs the lb profile", "leave it out of --faults")


def default_faults(record: ClusterRecord) -> tuple[str, ...]:
    return tuple(k for k in KINDS if k != "backend-kill" or record.profile == "lb")


def configuration(cluster: str) -> dict[str, Any]:
    """What an operator set and the run must not lose: backends' weights and states, bans,
    standby flags."""
    status = api.status(cluster)
    return {
        "backends": {b.node: (b.weight, b.state) for b in status.backends},
        "bans": {g.name: sorted(g.bans) for g in status.groups},
        "standby": sorted(n.name for n in status.nodes if n.standby),
    }


def lost(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    found = []
    for node, (weight, state) in before["backends"].items():
        now = after["backends"].get(node)
        if now != (weight, state):
            found.append(f"backend {node} was weight {weight} {state}, now {now or 'gone'}")
    for group, bans in before["bans"].items():
        if after["bans"].get(group) != bans:
            found.append(f"bans of {group} were {bans}, now {after['bans'].get(group)}")
    if after["standby"] != before["standby"]:
        found.append(f"standby nodes were {before['standby']}, now {after['standby']}")
    return found


class Chaos:
    """One run. ``clock`` is time.monotonic (the prober's and sampler's clock)."""

    def __init__(self, options: ChaosOptions, reporter: Reporter) -> None:
        self.options = options
        self.reporter = reporter
        self.state = StateDir(options.cluster)
        self.record = self.state.load()
        check_options(options, self.record)
        self.kinds = options.faults if options.faults is not None else default_faults(self.record)
        self.seed = (
            options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
        )
        self.rng = random.Random(self.seed)
        self.podman = Podman(self.state.root)
        ca = cluster_ca(self.state)
        tls = TlsFiles(str(ca.ca_cert), *(str(p) for p in ca.controller_paths()))
        self.faults = SandboxFaults(self.podman, self.record, tls if ca.ca_cert.exists() else None)
        self.members = api.etcd_members(self.record)
        self.client = api.agent_client(self.state, self.record)

    # -- the cluster as the agents see it ----------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """(healthy, why not): quorum, every node online, the group started on one holder."""
        try:
            status = self.client.status()
        except ClusterctlError as exc:
            return False, exc.message
        why = unhealthy(status, GROUP)
        group = next((g for g in status.get("groups", []) if g["name"] == GROUP), None)
        stopped = group is not None and group.get("state") != "started"
        if stopped and any((group.get("failcounts") or {}).values()):
            # every node failed it up to its threshold (service kills): clean up, as an
            # operator would after a run of failures, so the run can go on
            self.client.cleanup(GROUP)
        return not why, why

    def wait_healthy(self, timeout: float) -> float | None:
        """Seconds until healthy, or None if not within ``timeout``."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.health()[0]:
                return time.monotonic() - began
            time.sleep(0.25)
        return None

    # -- the run -----------------------------------------------------------------------------

    def target(self, kind: str, holder: str) -> str | None:
        names = [n.name for n in self.record.nodes]
        others = [n for n in names if n != holder]
        if kind in ("agent-kill", "service-kill"):
            return holder
        if kind == "etcd-leader-kill":
            return self.faults.etcd_leader(self.members)
        if kind == "backend-kill":
            return self.rng.choice(others)
        # crash, freeze, partition: the holder half of the time (the interesting case)
        return holder if self.rng.random() < 0.5 else self.rng.choice(others)

    def run(self) -> ChaosReport:
        healthy, why = self.health()
        if not healthy:
            raise ClusterctlError(
                f"chaos needs a healthy cluster: {why}",
                f"see `clusterctl status --cluster {self.record.name}`",
            )
        before = configuration(self.record.name)
        report = ChaosReport(
            self.record.name, self.record.profile, self.seed, self.options.duration
        )
        wall_start = time.time()
        sampler = HolderSampler(node_pids(self.podman, self.record), self.record.vip).start()
        prober = Prober(f"http://{self.record.vip}/").start()
        start = time.monotonic()
        marks: list[tuple[str, str, float, float, float | None]] = []
        try:
            time.sleep(1.0)
            while time.monotonic() - start < self.options.duration:
                marks.append(self._one_fault(sampler, start))
                pause = min(30.0, self.rng.expovariate(self.options.rate / 60.0))
                rest = self.options.duration - (time.monotonic() - start)
                time.sleep(max(0.0, min(pause, rest)))
            self.faults.heal_all()
            converge = self.wait_healthy(CONVERGE_WAIT)
            sampler.refresh(node_pids(self.podman, self.record))
            time.sleep(1.0)
        finally:
            samples = prober.stop()
            holder_samples = sampler.stop()
        report.converged = converge is not None
        report.converge_s = round(converge, 1) if converge is not None else None
        report.requests = len(samples)
        report.failed_requests = sum(1 for s in samples if not s.ok)
        report.holder_samples = len(holder_samples)
        report.sampler_error = sampler.error
        report.dual_holder_samples = sum(1 for _, h in holder_samples if len(h) > 1)
        report.dual_holders = [
            (round(t - start, 3), list(h)) for t, h in holder_samples if len(h) > 1
        ][:20]
        report.faults = self._fault_records(marks, samples, holder_samples, start)
        report.lost_configuration = lost(before, configuration(self.record.name))
        self._check_history(report, holder_samples, wall_start)
        report.files = write_report(report, self._out_dir(), samples, holder_samples, start)
        return report

    def _one_fault(
        self, sampler: HolderSampler, start: float
    ) -> tuple[str, str, float, float, float | None]:
        kind = self.rng.choice(self.kinds)
        holder = current_holder(sampler)
        node = self.target(kind, holder) if holder else None
        if node is None:  # no holder or no etcd leader right now: a short breath, then on
            time.sleep(0.5)
            return ("skipped", "", time.monotonic(), time.monotonic(), None)
        injected = time.monotonic()
        fault = self.faults.inject(kind, node)
        hold = self.rng.uniform(*self.options.hold) if kind in LASTING else 0.0
        self.reporter.info(f"[{injected - start:6.1f}s] {kind} on {node} (held {hold:.1f} s)")
        time.sleep(hold)
        self.faults.heal(fault)
        healed = time.monotonic()
        if kind == "crash":  # its init has a new PID: sample the restarted node from now on
            sampler.refresh(node_pids(self.podman, self.record))
        took = self.wait_healthy(HEALTHY_WAIT)
        if took is None:
            self.reporter.warn(f"{kind} on {node}: not healthy {HEALTHY_WAIT:.0f} s after healing")
            self.faults.heal_all()
        sampler.refresh(node_pids(self.podman, self.record))
        return (kind, node, injected, healed, None if took is None else healed + took)

    def _fault_records(
        self,
        marks: list[tuple[str, str, float, float, float | None]],
        samples: list[Sample],
        holder_samples: list[tuple[float, tuple[str, ...]]],
        start: float,
    ) -> list[FaultRecord]:
        records = []
        real = [m for m in marks if m[0] != "skipped"]
        for i, (kind, node, injected, healed, healthy) in enumerate(real):
            until = real[i + 1][2] if i + 1 < len(real) else float("inf")
            failed = sum(1 for s in samples if injected <= s.sent < until and not s.ok)
            records.append(
                FaultRecord(
                    kind=kind,
                    node=node,
                    injected_s=round(injected - start, 3),
                    healed_s=round(healed - start, 3),
                    healthy_s=None if healthy is None else round(healthy - start, 3),
                    holder_before=holder_at(holder_samples, injected, before=True),
                    holder_after=holder_at(holder_samples, healthy or healed, before=False),
                    outage_s=round(longest_gap(samples, injected, healthy or healed), 3),
                    failed_requests=failed,
                )
            )
        return records

    def _check_history(
        self,
        report: ChaosReport,
        holder_samples: list[tuple[float, tuple[str, ...]]],
        wall_start: float,
    ) -> None:
        """Every change of holder seen by the samples must be in the history, in order."""
        changes = holder_changes(holder_samples)
        report.holder_changes = len(changes)
        try:
            entries = api.history(self.record.name, GROUP, since=wall_start - 1.0, limit=100_000)
        except ClusterctlError as exc:
            report.history_missing = [f"history unreadable: {exc.message}"]
            return
        acquired = [e for e in entries if e.event == "acquired"]
        report.history_acquired = len(acquired)
        report.history_missing = missing_in_history(changes, acquired)

    def _out_dir(self) -> Path:
        if self.options.out is not None:
            return self.options.out
        return self.state.path / "chaos" / time.strftime("%Y%m%d-%H%M%S")


def longest_gap(samples: list[Sample], start: float, end: float) -> float:
    """The fault's outage: the longest stretch between two answers (the last one before
    ``start`` included) that reaches into [start, end]. Failures interleaved with answers
    (one backend of three down) count as failed requests, not as an outage."""
    answered = [s.sent for s in samples if s.ok]
    before = [t for t in answered if t < start]
    times = before[-1:] + [t for t in answered if start <= t <= end]
    later = next((t for t in answered if t > end), None)
    if later is not None:
        times.append(later)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b >= start]
    return max(gaps, default=0.0)


def current_holder(sampler: HolderSampler) -> str:
    """The one node holding the VIP in the latest sample ("" if none or several)."""
    samples = sampler.samples[-1:] if sampler.samples else []
    holders = samples[0][1] if samples else ()
    return holders[0] if len(holders) == 1 else ""


def holder_at(samples: list[tuple[float, tuple[str, ...]]], at: float, before: bool) -> str:
    """The single holder in the last sample before ``at`` (or the first one after it)."""
    chosen = [h for t, h in samples if (t < at if before else t >= at) and len(h) == 1]
    if not chosen:
        return ""
    return (chosen[-1] if before else chosen[0])[0]


def holder_changes(samples: list[tuple[float, tuple[str, ...]]]) -> list[str]:
    """The successive single holders the samples saw (a change = a new node holding alone)."""
    sequence: list[str] = []
    for _, holders in samples:
        if len(holders) == 1 and (not sequence or sequence[-1] != holders[0]):
            sequence.append(holders[0])
    return sequence[1:]  # the first is who held it when the run began


def missing_in_history(changes: list[str], acquired: list[HistoryEntry]) -> list[str]:
    """Holder changes with no matching ``acquired`` entry, matched in order. An entry may be
    in the history without a change seen (a take-over quicker than one 50 ms sample, or a
    holder that took the group again on the same node), never the other way round."""
    missing = []
    position = 0
    nodes = [e.node for e in acquired]
    for node in changes:
        try:
            position = nodes.index(node, position) + 1
        except ValueError:
            missing.append(f"no 'acquired' entry for {node} taking over")
    return missing


def write_report(
    report: ChaosReport,
    out: Path,
    samples: list[Sample],
    holder_samples: list[tuple[float, tuple[str, ...]]],
    start: float,
) -> dict[str, str]:
    from clusterctl.timeline import render_timeline

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out / "chaos.json",
        "table": out / "chaos.md",
        "timeline": out / "timeline.svg",
    }
    names = {k: str(v) for k, v in files.items()}
    report.files = names
    files["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    files["table"].write_text(report.to_table() + "\n")
    files["timeline"].write_text(render_timeline(report, samples, holder_samples, start))
    return names


def run(
    options: ChaosOptions, reporter: Reporter, on_start: Callable[[int], None] | None = None
) -> ChaosReport:
    chaos = Chaos(options, reporter)
    if on_start is not None:
        on_start(chaos.seed)
    return chaos.run()
