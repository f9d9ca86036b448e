"""`clusterctl bench failover`: service outage through the VIP for each kind of fault.

A client on the host starts a request to the VIP every 20 ms (200 ms timeout, each in its own
thread). The outage is the time from the last answer before the fault to the first answer
after it. Every trial also samples all nodes' addresses every 50 ms and counts samples in
which two nodes held the VIP.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from clusterctl import cluster as api
from clusterctl.agentclient import unhealthy
from clusterctl.bench.prober import Outage, Prober, outage
from clusterctl.bench.sandbox import HolderSampler, SandboxBench, node_pids, vip_holders
from clusterctl.errors import ClusterctlError
from clusterctl.reporter import ListReporter, Reporter
from clusterctl.state import ClusterRecord

FAULTS = ("node_crash", "web_crash", "agent_kill", "planned_move", "rolling_restart")


@dataclass(frozen=True)
class Trial:
    fault: str
    trial: int
    outage_s: float
    failed_requests: int
    requests: int
    from_node: str
    to_node: str
    dual_holder_samples: int
    holder_samples: int


class FailoverBench(SandboxBench):
    kind = "failover"
    wants = "a podman sandbox in the ha profile"

    def fits(self, record: ClusterRecord) -> bool:
        return record.provider == "podman" and record.profile == "ha"

    def __init__(self, cluster: str, reporter: Reporter) -> None:
        super().__init__(cluster, reporter)
        self.url = f"http://{self.record.vip}/"

    def holder(self) -> str:
        holders = vip_holders(node_pids(self.podman, self.record), self.record.vip)
        if len(holders) != 1:
            raise ClusterctlError(f"expected one VIP holder, found {holders}", "check status")
        return holders[0]

    def wait_healthy(self, timeout: float = 120.0) -> str:
        """Until every node is an online member, the group is started and the VIP answers."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                status = api.agent_client(self.state, self.record).status()
                last = unhealthy(status, "web")
                if not last:
                    prober = Prober(self.url)
                    prober._one(time.monotonic())
                    if prober.samples and prober.samples[0].ok:
                        return next(g["node"] for g in status["groups"] if g["name"] == "web")
                    last = "the VIP does not answer"
            except ClusterctlError as exc:
                last = exc.message
            time.sleep(0.5)
        raise ClusterctlError(f"cluster did not become healthy: {last}", "see clusterctl status")

    def heal(self) -> None:
        """Bring every node back (restart crashed ones) and reset fail counts."""
        api.up(api.UpOptions(cluster=self.cluster), ListReporter())
        api.cleanup(self.cluster, "web")
        self.wait_healthy()

    def inject(self, fault: str, holder: str) -> Callable[[], None]:
        other = next(n.name for n in self.record.nodes if n.name != holder)
        kinds = {"node_crash": "crash", "web_crash": "service-kill", "agent_kill": "agent-kill"}

        def act() -> None:
            if fault == "planned_move":
                api.failover(self.cluster, "web", other, ListReporter())
            else:
                self.faults.inject(kinds[fault], holder)

        return act

    def online(self) -> set[str]:
        """Nodes the agents report online (on an etcd member: once its member rejoined)."""
        try:
            return {n.name for n in api.status(self.cluster).nodes if n.online}
        except ClusterctlError:
            return set()

    def wait(self, done: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise ClusterctlError(f"{what} not within {timeout:.0f} s", "see clusterctl status")
            time.sleep(0.2)

    def rolling_restart(self, number: int) -> list[Trial]:
        """Crash and restart every node in turn, with no `up`: each round kills the holder
        while it is a node not yet restarted (so most rounds are takeovers), waits until the
        agents see it gone (as after a real reboot), starts it and waits only until it
        reports online. One Trial per round; ``from_node`` is the node restarted."""
        self.wait_healthy()
        pending = [n.name for n in self.record.nodes]
        sampler = HolderSampler(node_pids(self.podman, self.record), self.record.vip).start()
        prober = Prober(self.url).start()
        time.sleep(1.0)
        rounds = []
        try:
            while pending:
                holder = self.holder()
                node = holder if holder in pending else pending[0]
                pending.remove(node)
                fault_at = time.monotonic()
                crash = self.faults.inject("crash", node)
                self.wait(lambda n=node: n not in self.online(), f"{node} offline")
                self.faults.heal(crash)
                self.wait(lambda n=node: n in self.online(), f"{node} online")
                sampler.refresh(node_pids(self.podman, self.record))
                time.sleep(1.0)
                rounds.append((node, node == holder, fault_at, time.monotonic()))
        finally:
            samples = prober.stop()
            sampler.stop()
        trials = []
        for node, was_holder, fault_at, end in rounds:
            window = [s for s in samples if fault_at - 1.0 <= s.sent <= end]
            result = outage(window, fault_at)
            trials.append(
                Trial(
                    fault="rolling_restart" if was_holder else "rolling_restart_standby",
                    trial=number,
                    outage_s=round(result.seconds, 3),
                    failed_requests=result.failed,
                    requests=result.sent,
                    from_node=node,
                    to_node=result.after,
                    dual_holder_samples=sum(
                        1 for t, h in sampler.samples if fault_at <= t <= end and len(h) > 1
                    ),
                    holder_samples=len(sampler.samples),
                )
            )
            self.reporter.info(
                f"rolling restart #{number}: {node} ({'holder' if was_holder else 'standby'}) "
                f"outage {result.seconds:.3f} s, {result.failed} failed -> {result.after}"
            )
        return trials

    def trial(self, fault: str, number: int) -> Trial:
        holder = self.wait_healthy()
        pids = node_pids(self.podman, self.record)
        sampler = HolderSampler(pids, self.record.vip).start()
        prober = Prober(self.url).start()
        time.sleep(1.0)
        fault_at = time.monotonic()
        self.inject(fault, holder)()
        time.sleep(4.0)
        samples = prober.stop()
        holder_samples = sampler.stop()
        result: Outage = outage(samples, fault_at)
        trial = Trial(
            fault=fault,
            trial=number,
            outage_s=round(result.seconds, 3),
            failed_requests=result.failed,
            requests=result.sent,
            from_node=result.before,
            to_node=result.after,
            dual_holder_samples=sampler.dual,
            holder_samples=len(holder_samples),
        )
        self.reporter.info(
            f"{fault} #{number}: outage {trial.outage_s:.3f} s, {trial.failed_requests} failed, "
            f"{trial.from_node} -> {trial.to_node}, dual-holder samples {trial.dual_holder_samples}"
        )
        if fault in ("node_crash", "agent_kill", "web_crash"):
            self.heal()
        return trial


def summarize(trials: list[Trial]) -> list[dict]:
    rows = []
    for fault in (*FAULTS, "rolling_restart_standby"):
        of_fault = [t for t in trials if t.fault == fault]
        values = [t.outage_s for t in of_fault]
        if not values:
            continue
        rows.append(
            {
                "fault": fault,
                "trials": len(values),
                "outage_min_s": min(values),
                "outage_median_s": round(statistics.median(values), 3),
                "outage_max_s": max(values),
                "failed_requests_total": sum(t.failed_requests for t in trials if t.fault == fault),
                "dual_holder_samples": sum(
                    t.dual_holder_samples for t in trials if t.fault == fault
                ),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| fault | trials | outage min / median / max (s) | failed requests "
        "| dual-holder samples |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['fault']} | {r['trials']} | {r['outage_min_s']:.3f} / "
            f"{r['outage_median_s']:.3f} / {r['outage_max_s']:.3f} | "
            f"{r['failed_requests_total']} | {r['dual_holder_samples']} |"
        )
    return "\n".join(lines)


def run(cluster: str, trials: int, faults: list[str], reporter: Reporter) -> dict:
    bench = FailoverBench(cluster, reporter)
    results: list[Trial] = []
    for number in range(1, trials + 1):
        for fault in faults:  # interleaved, so machine noise spreads over every fault
            if fault == "rolling_restart":
                results.extend(bench.rolling_restart(number))
            else:
                results.append(bench.trial(fault, number))
    rows = summarize(results)
    return {
        "benchmark": "failover",
        "cluster": cluster,
        "nodes": len(bench.record.nodes),
        "probe": {"period_s": 0.02, "timeout_s": 0.2},
        "summary": rows,
        "trials": [asdict(t) for t in results],
    }
