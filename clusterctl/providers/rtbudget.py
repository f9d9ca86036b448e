"""Real-time CPU time for the sandbox nodes that run an etcd member.

Why: on a saturated machine etcd's heartbeats (every 20 ms, election after 200 ms) wait
behind the workload; followers then elect a new leader, every agent's renewal fails for that
long and a healthy holder fences itself. With etcd at SCHED_RR (the etcd role's
``chrt``, as corosync runs itself) `clusterctl bench lb` measured 0-4 such fencings where it
had counted several per run, and about 20 with etcd at Nice -10 alone (README, "No false
failovers"). The node's budget also covers its agent's loop, which runs at real time too.

On a cgroup-v1 host whose kernel schedules real-time tasks per group (``cpu.rt_runtime_us``
exists), a container gets no real-time time unless its cgroup is given some, and podman's
parent cgroup none unless it has some itself. So the provider raises the parent's budget (a
limit, not a reservation: unused time stays with ordinary tasks) and gives each member node
its share (``podman run --cpu-rt-runtime``: part of the container's configuration, so it
holds across restarts; nodes made before this keep running at normal priority until they
are made again). Elsewhere (cgroup v2, or no group scheduling) nothing is needed here.
Where no budget is left, the node runs etcd at normal priority (the role's chrt fails and
is ignored) and the provider says so.
"""

from __future__ import annotations

from pathlib import Path

CPU_CGROUP = Path("/sys/fs/cgroup/cpu")
PARENT = "libpod_parent"  # podman's parent cgroup with the cgroupfs manager
NODE_BUDGET_US = 150_000  # per second (rt_period), per CPU: what the benchmark ran with
PARENT_BUDGET_US = 900_000
HOST_RESERVE_US = 50_000  # left to real-time tasks of the host itself


def _read(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


class RtBudget:
    def __init__(self, root: Path = CPU_CGROUP) -> None:
        self.root = root
        self.parent = root / PARENT

    def supported(self) -> bool:
        return (self.root / "cpu.rt_runtime_us").exists()

    def ensure_parent(self) -> int:
        """Raise the parent's budget to PARENT_BUDGET_US (never lower it); returns it."""
        self.parent.mkdir(exist_ok=True)
        current = _read(self.parent / "cpu.rt_runtime_us")
        wanted = min(PARENT_BUDGET_US, _read(self.root / "cpu.rt_runtime_us") - HOST_RESERVE_US)
        if current < wanted:
            (self.parent / "cpu.rt_runtime_us").write_text(str(wanted))
            current = wanted
        return current

    def free(self) -> int:
        """The parent's budget not yet given to a child (another cluster's nodes included)."""
        children = sum(
            _read(child / "cpu.rt_runtime_us") for child in self.parent.iterdir() if child.is_dir()
        )
        return _read(self.parent / "cpu.rt_runtime_us") - children
