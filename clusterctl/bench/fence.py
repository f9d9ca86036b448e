"""`clusterctl bench fence`: what fencing costs, on a sandbox with a fence device.

Two groups run a writer on the same node: ``fenced`` (``fencing: required``) and ``plain``
(self-fencing only). Each writer appends its node's name and the time to its own file on the
storage every node mounts, every 10 ms. A trial crashes (``podman kill``) or freezes
(``podman pause``) the node that holds both, so both groups fail over from the same fault at
the same moment: the difference of their writer gaps (the dead node's last line to the new
node's first) is what the fence costs. The device's own time is the new holder's, from its
history: ``fence-begun`` to ``fence-done`` (Debian's fence_docker against the host's fence
device, ``clusterctl up --fencing``).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from clusterctl import cluster as api
from clusterctl.bench.sandbox import SandboxBench, wait_until
from clusterctl.errors import ClusterctlError
from clusterctl.providers.podman import SHARED_DIR
from clusterctl.reporter import ListReporter, Reporter
from clusterctl.state import ClusterRecord

FAULTS = ("crash", "freeze")
GROUP_FENCED, GROUP_PLAIN = "fenced", "plain"
WRITE_PERIOD = 0.01  # seconds between a writer's lines


def writer_unit(path: str) -> str:
    """A systemd unit that appends "<hostname> <epoch seconds>" to ``path`` every 10 ms."""
    loop = f'h=$(hostname); while :; do echo "$h $(date +%s.%N)" >> {path}; sleep 0.01; done'
    # systemd expands % and $ in ExecStart: doubled, they reach the shell as they are
    command = loop.replace("%", "%%").replace("$", "$$")
    # A stop bounded at 2 s: seen in the fencing tests, a node's writer stop job ran on for
    # minutes after its processes got SIGTERM (a freshly restarted node; likely cgroup v1
    # inside a container, where systemd may miss the unit's cgroup emptying), so the holder
    # kept the group (it never releases a resource that would not stop) and a planned move
    # timed out.
    return (
        "[Unit]\nDescription=clusterctl writer: appends this node's name to shared storage\n\n"
        f"[Service]\nExecStart=/bin/sh -c '{command}'\nTimeoutStopSec=2\n"
    )


def read_writes(path: Path) -> list[tuple[str, float]]:
    """(node, time) of every line of a writer's file (a line cut by a kill is skipped)."""
    rows = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                rows.append((parts[0], float(parts[1])))
            except ValueError:
                continue
    return rows


def _groups() -> list[dict]:
    # no preferred node: a move of ``plain`` to the node of ``fenced`` must not wait for a
    # preferred node that is still rejoining after the last trial
    return [
        {
            "name": name,
            "fencing": fencing,
            "resources": [
                {
                    "name": "writer",
                    "type": "systemd",
                    "unit": f"{name}-writer.service",
                    "exclusive": True,
                }
            ],
        }  # fmt: skip
        for name, fencing in ((GROUP_FENCED, "required"), (GROUP_PLAIN, "none"))
    ]


@dataclass(frozen=True)
class Trial:
    fault: str
    trial: int
    node: str
    fenced_gap_s: float  # writer gap of the fencing group
    plain_gap_s: float  # writer gap of the self-fencing group, same fault
    fence_s: float | None  # fence-begun to fence-done on the new holder
    fenced_to: str
    plain_to: str


class FenceBench(SandboxBench):
    kind = "fence"
    wants = "a podman sandbox with a fence device"

    def fits(self, record: ClusterRecord) -> bool:
        return record.provider == "podman" and record.fencing

    def __init__(self, cluster: str, reporter: Reporter) -> None:
        super().__init__(cluster, reporter)
        self.shared = self.state.path / "shared"

    def file(self, group: str) -> Path:
        return self.shared / f"{group}-writes"

    def install(self) -> None:
        """The writers' units on every node, then the two groups (`up --groups`)."""
        self.faults.heal_all()  # a node left powered off by an earlier run's fence
        for node in self.record.nodes:
            for group in (GROUP_FENCED, GROUP_PLAIN):
                unit = writer_unit(f"{SHARED_DIR}/{group}-writes")
                self.podman.run(
                    "exec", "-i", node.container, "sh", "-c",
                    f"cat > /etc/systemd/system/{group}-writer.service",
                    stdin=unit.encode(),
                )  # fmt: skip
            self.podman.run("exec", node.container, "systemctl", "daemon-reload")
        with tempfile.TemporaryDirectory(prefix="clusterctl-bench-") as tmp:
            groups = Path(tmp) / "groups.json"
            groups.write_text(json.dumps(_groups()))
            api.up(api.UpOptions(cluster=self.cluster, groups_file=groups), self.reporter)

    def holders(self) -> dict[str, str]:
        """Group -> node for the groups started now."""
        status = api.agent_client(self.state, self.record).status()
        return {
            g["name"]: g["node"]
            for g in status.get("groups", [])
            if g.get("state") == "started" and g.get("node")
        }

    def wait(self, done: Callable[[], bool], what: str, timeout: float = 180.0) -> None:
        wait_until(done, what, timeout)

    def together(self) -> str:
        """Both groups started on one node, every node online; returns that node."""
        self.wait(
            lambda: (
                {GROUP_FENCED, GROUP_PLAIN} <= set(self.holders())
                and {n.name for n in api.status(self.cluster).nodes if n.online}
                == {n.name for n in self.record.nodes}
            ),
            "both groups started, every node online",
        )
        holders = self.holders()
        node = holders[GROUP_FENCED]
        if holders[GROUP_PLAIN] != node:
            api.failover(self.cluster, GROUP_PLAIN, node, ListReporter())
            self.wait(lambda: self.holders().get(GROUP_PLAIN) == node, f"plain on {node}")
        time.sleep(1.0)  # both writers write
        return node

    def gap(self, group: str, node: str, start: int) -> tuple[float, str]:
        """Seconds from ``node``'s last line to the next writer's first, and that writer."""
        rows = read_writes(self.file(group))[start:]
        last = max((t for n, t in rows if n == node), default=None)
        first = next(((t, n) for n, t in rows if n != node), None)
        if last is None or first is None:
            raise ClusterctlError(f"{group}: no takeover in the writer's file", "")
        return round(first[0] - last, 3), first[1]

    def fence_time(self, since: float) -> float | None:
        entries = api.history(self.cluster, GROUP_FENCED, since=since)
        begun = next((e.at for e in entries if e.event == "fence-begun"), None)
        done = next((e.at for e in entries if e.event == "fence-done"), None)
        return round(done - begun, 3) if begun is not None and done is not None else None

    def trial(self, fault: str, number: int) -> Trial:
        node = self.together()
        starts = {g: len(read_writes(self.file(g))) for g in (GROUP_FENCED, GROUP_PLAIN)}
        since = time.time()
        self.faults.inject(fault, node)
        try:
            self.wait(
                lambda: all(
                    any(n != node for n, _ in read_writes(self.file(g))[starts[g] :])
                    for g in starts
                ),
                "both groups writing elsewhere",
                timeout=60,
            )
            time.sleep(1.0)
        finally:
            # a frozen node was powered off by the fence: either way, start it again
            self.faults.heal_all()
        fenced_gap, fenced_to = self.gap(GROUP_FENCED, node, starts[GROUP_FENCED])
        plain_gap, plain_to = self.gap(GROUP_PLAIN, node, starts[GROUP_PLAIN])
        trial = Trial(
            fault, number, node, fenced_gap, plain_gap, self.fence_time(since), fenced_to,
            plain_to,
        )  # fmt: skip
        self.reporter.info(
            f"{fault} #{number} of {node}: fenced group {fenced_gap:.3f} s, plain group "
            f"{plain_gap:.3f} s, fence {trial.fence_s} s"
        )
        return trial


def summarize(trials: list[Trial]) -> list[dict]:
    rows = []
    for fault in FAULTS:
        of = [t for t in trials if t.fault == fault]
        if not of:
            continue
        fences = [t.fence_s for t in of if t.fence_s is not None]
        extra = [t.fenced_gap_s - t.plain_gap_s for t in of]
        rows.append(
            {
                "fault": fault,
                "trials": len(of),
                "fenced_gap_median_s": round(statistics.median(t.fenced_gap_s for t in of), 3),
                "plain_gap_median_s": round(statistics.median(t.plain_gap_s for t in of), 3),
                "extra_median_s": round(statistics.median(extra), 3),
                "extra_max_s": round(max(extra), 3),
                "fence_median_s": round(statistics.median(fences), 3) if fences else None,
                "fence_max_s": round(max(fences), 3) if fences else None,
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| fault | trials | writer gap, fencing group (median) | same fault, self-fencing group "
        "| fencing costs (median / max) | fence_docker off (median / max) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        fence = (
            f"{r['fence_median_s']:.3f} / {r['fence_max_s']:.3f} s"
            if r["fence_median_s"] is not None
            else "-"
        )
        lines.append(
            f"| {r['fault']} | {r['trials']} | {r['fenced_gap_median_s']:.3f} s | "
            f"{r['plain_gap_median_s']:.3f} s | {r['extra_median_s']:.3f} / "
            f"{r['extra_max_s']:.3f} s | {fence} |"
        )
    return "\n".join(lines)


def run(cluster: str, trials: int, faults: list[str], reporter: Reporter) -> dict:
    bench = FenceBench(cluster, reporter)
    bench.install()
    results = [bench.trial(f, n) for n in range(1, trials + 1) for f in faults]
    return {
        "benchmark": "fence",
        "cluster": cluster,
        "nodes": len(bench.record.nodes),
        "device": "fence_docker -> the host's fence device (clusterctl up --fencing)",
        "summary": summarize(results),
        "trials": [asdict(t) for t in results],
    }
