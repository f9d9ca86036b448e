"""Slurm as the controller sees it: its commands run on a node of an hpc cluster, their
output parsed into node and job rows (clusterctl/hpc.py builds the operations on them).

Everything runs Slurm's own commands on a node of the cluster over SSH (host keys checked
against the cluster's known_hosts, as Ansible does), so the controller needs no Slurm, no
munge key and no route to the controller's VIP beyond what SSH gives. Any node will do:
Slurm's clients reach slurmctld at the VIP of the group ``slurm`` wherever it runs.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clusterctl.errors import ClusterctlError
from clusterctl.inventory import InventoryNode, reachable_nodes
from clusterctl.state import ClusterRecord, StateDir

SSH_FAILED = 255  # ssh's own exit status: it could not reach or log in to the node
EXAMPLES_DIR = "/usr/local/share/clusterctl/examples"  # the slurm role's slurm_examples_dir
# A node drained by clusterctl says so: an administrator's own drain keeps its reason.
DRAIN_REASON = "clusterctl drain"


@dataclass(frozen=True)
class SlurmNode:
    name: str
    state: str  # Slurm's long state: idle, allocated, mixed, drained, draining, down, ...
    cpus: int = 0
    reason: str = ""


@dataclass(frozen=True)
class SlurmJob:
    job_id: int
    state: str  # RUNNING, PENDING, COMPLETING, ...
    nodes: int
    nodelist: str
    name: str


@dataclass(frozen=True)
class SlurmStatus:
    """What Slurm says, asked through one node; ``error`` when it could not be asked."""

    nodes: list[SlurmNode] = field(default_factory=list)
    jobs: list[SlurmJob] = field(default_factory=list)
    error: str = ""
    running: int = 0  # jobs RUNNING
    pending: int = 0  # jobs PENDING

    @classmethod
    def of(cls, nodes: list[SlurmNode], jobs: list[SlurmJob]) -> SlurmStatus:
        running = sum(1 for j in jobs if j.state == "RUNNING")
        pending = sum(1 for j in jobs if j.state == "PENDING")
        return cls(nodes, jobs, running=running, pending=pending)


def parse_sinfo(text: str) -> list[SlurmNode]:
    """`sinfo -N -h -o '%N|%T|%c|%E'`: one node per line (a node in several partitions comes
    once). A trailing ``*`` (not responding) and ``~``/``#``/``%`` (power states) are kept."""
    seen: dict[str, SlurmNode] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        cpus = int(parts[2]) if parts[2].isdigit() else 0
        reason = parts[3].strip() if len(parts) > 3 and parts[3] != "none" else ""
        seen.setdefault(parts[0], SlurmNode(parts[0], parts[1], cpus, reason))
    return sorted(seen.values(), key=lambda n: n.name)


def parse_squeue(text: str) -> list[SlurmJob]:
    """`squeue -h -o '%i|%T|%D|%N|%j'`: one job per line."""
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|", 4)
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        nodes = int(parts[2]) if parts[2].isdigit() else 0
        jobs.append(SlurmJob(int(parts[0]), parts[1], nodes, parts[3], parts[4]))
    return jobs


SINFO = "sinfo -N -h -o '%N|%T|%c|%E'"
SQUEUE = "squeue -h -o '%i|%T|%D|%N|%j'"


class SlurmShell:
    """Runs Slurm commands on the cluster's nodes over SSH, trying them in order until one
    answers (a node that is down or unreachable is skipped)."""

    def __init__(
        self,
        state: StateDir,
        nodes: list[InventoryNode],
        key_for: Callable[[InventoryNode], object],
        connect_timeout: float = 5.0,
    ) -> None:
        self.state = state
        self.nodes = nodes
        self.key_for = key_for
        self.connect_timeout = connect_timeout

    def argv(self, node: InventoryNode, command: str) -> list[str]:
        return [
            "ssh", "-q", "-i", str(self.key_for(node)), "-p", str(node.port),
            "-o", f"UserKnownHostsFile={self.state.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout:.0f}",
            f"{node.user}@{node.address}", command,
        ]  # fmt: skip

    def run(self, command: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run `command` on the first node that answers; its result (any exit status but
        ssh's own failure)."""
        last = ""
        for node in self.nodes:
            try:
                proc = subprocess.run(
                    self.argv(node, command),
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                last = f"{node.name}: no answer within {timeout:.0f} s"
                continue
            if proc.returncode != SSH_FAILED:
                return proc
            last = f"{node.name}: {proc.stderr.strip() or 'ssh failed'}"
        raise ClusterctlError(
            f"no node of cluster {self.state.cluster!r} answered over SSH ({last})",
            f"check `clusterctl status --cluster {self.state.cluster}`",
        )

    def stream(self, command: str) -> tuple[str, int]:
        """Run `command` with its output going straight to ours; (node, exit status)."""
        for node in self.nodes:
            # a probe first: once the real command ran, it is never re-run elsewhere
            probe = subprocess.run(
                self.argv(node, "true"), capture_output=True, timeout=30, stdin=subprocess.DEVNULL
            )
            if probe.returncode != 0:
                continue
            proc = subprocess.run(self.argv(node, command), stdin=subprocess.DEVNULL)
            return node.name, proc.returncode
        raise ClusterctlError(
            f"no node of cluster {self.state.cluster!r} answered over SSH",
            f"check `clusterctl status --cluster {self.state.cluster}`",
        )

    # -- Slurm ------------------------------------------------------------------------------

    def status(self) -> SlurmStatus:
        proc = self.run(f"{SINFO} && echo --- && {SQUEUE}")
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
            return SlurmStatus(error=f"Slurm's controller did not answer: {detail}")
        nodes_text, _, jobs_text = proc.stdout.partition("---\n")
        return SlurmStatus.of(parse_sinfo(nodes_text), parse_squeue(jobs_text))

    def scontrol(self, *args: str) -> str:
        proc = self.run("scontrol " + " ".join(shlex.quote(a) for a in args))
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            raise ClusterctlError(
                f"scontrol {args[0]} failed: {detail}", "see `clusterctl status` for Slurm's state"
            )
        return proc.stdout

    def node(self, name: str) -> SlurmNode:
        for node in self.status_or_raise().nodes:
            if node.name == name:
                return node
        raise ClusterctlError(
            f"Slurm does not know node {name!r}", "see the nodes in `clusterctl status`"
        )

    def status_or_raise(self) -> SlurmStatus:
        status = self.status()
        if status.error:
            raise ClusterctlError(status.error, "see `clusterctl status`: is group slurm started?")
        return status

    def jobs_on(self, name: str) -> list[SlurmJob]:
        proc = self.run(f"{SQUEUE} -w {shlex.quote(name)}")
        if proc.returncode != 0:
            raise ClusterctlError(
                f"cannot list the jobs on {name}: {proc.stderr.strip()[-200:]}",
                "see `clusterctl status`",
            )
        return parse_squeue(proc.stdout)


def shell_for(state: StateDir, record: ClusterRecord, provider) -> SlurmShell:
    """A SlurmShell over the cluster's nodes as its provider reaches them."""
    return SlurmShell(state, reachable_nodes(record), provider.key_for)


def srun_command(command: list[str], nodes: int, tasks: int | None, name: str) -> str:
    """The srun line of `clusterctl hpc run`: the job runs from /tmp (a directory every node
    has), one task per node unless told otherwise, under a name to cancel it by."""
    argv = ["srun", f"--nodes={nodes}", "--chdir=/tmp", f"--job-name={name}"]
    if tasks is not None:
        argv.append(f"--ntasks={tasks}")
    return " ".join(shlex.quote(a) for a in [*argv, "--", *command])


def wait_idle(
    shell: SlurmShell,
    name: str,
    timeout: float,
    progress: Callable[[str], None],
    poll: float = 1.0,
) -> None:
    """Wait until no job runs on `name` (a drained node's jobs finish on their own)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = shell.jobs_on(name)
        if not jobs:
            return
        if time.monotonic() >= deadline:
            ids = ", ".join(str(j.job_id) for j in jobs)
            raise ClusterctlError(
                f"{name} still runs job(s) {ids} after {timeout:.0f} s; it stays drained",
                "wait for them (`clusterctl status`), or raise --drain-timeout",
            )
        progress(f"waiting for {len(jobs)} job(s) on {name} to finish")
        time.sleep(poll)
