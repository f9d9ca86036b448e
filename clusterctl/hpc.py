"""The hpc profile's operations: run a job, drain and resume a node, take one out.

Thin over clusterctl/slurm.py (Slurm's commands on a node over SSH) and the cluster's record.
"""

from __future__ import annotations

import secrets
import signal

from clusterctl import cluster as api
from clusterctl.errors import ClusterctlError
from clusterctl.reporter import Reporter
from clusterctl.slurm import (
    DRAIN_REASON,
    SlurmNode,
    SlurmShell,
    shell_for,
    srun_command,
    wait_idle,
)
from clusterctl.state import ClusterRecord, StateDir


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def is_hpc(cluster: str) -> bool:
    return StateDir(cluster).load().profile == "hpc"


def hpc_cluster(cluster: str, reporter: Reporter) -> tuple[ClusterRecord, SlurmShell]:
    """The record of an hpc cluster and a shell on its nodes; one clear line for any other."""
    state = StateDir(cluster)
    record = state.load()
    if record.profile != "hpc":
        raise ClusterctlError(
            f"cluster {cluster!r} runs profile {record.profile}, which has no Slurm",
            "create an HPC cluster with `clusterctl up --profile hpc`",
        )
    provider = api.provider_for_record(state, reporter, record)
    return record, shell_for(state, record, provider)


def run_job(
    cluster: str, command: list[str], nodes: int | None, tasks: int | None, reporter: Reporter
) -> int:
    """Run `command` as one Slurm job over `nodes` nodes (default: all), its output streamed
    here; the job's exit status."""
    if not command:
        raise ClusterctlError("no command to run", "e.g. clusterctl hpc run -N 3 -- hostname")
    record, shell = hpc_cluster(cluster, reporter)
    count = len(record.nodes) if nodes is None else nodes
    if not 1 <= count <= len(record.nodes):
        raise ClusterctlError(
            f"-N {count}: the cluster has {len(record.nodes)} nodes",
            f"use 1 to {len(record.nodes)}, or add nodes with `clusterctl scale --add`",
        )
    if tasks is not None and tasks < count:
        raise ClusterctlError(f"-n {tasks} is fewer tasks than -N {count} nodes", "omit -n")
    # srun outlives a dropped SSH session (there is no terminal to hang up), so an
    # interrupted or terminated run cancels its job by name
    name = f"clusterctl-run-{secrets.token_hex(4)}"
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        node, status = shell.stream(srun_command(command, count, tasks, name))
    except KeyboardInterrupt:
        reporter.warn(f"interrupted: cancelling job {name}")
        shell.run(f"scancel --name={name}")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    reporter.progress(f"job {name} (from {node}) finished with exit status {status}")
    return status


def _known_node(record: ClusterRecord, shell: SlurmShell, node: str) -> SlurmNode:
    record.require_node(node)
    return shell.node(node)


def drain(cluster: str, node: str, reporter: Reporter, timeout: float | None = None) -> dict:
    """Slurm's drain: no new jobs on `node`, running ones finish. With a timeout, wait until
    they did."""
    record, shell = hpc_cluster(cluster, reporter)
    _known_node(record, shell, node)
    drain_node(shell, node, reporter, timeout)
    return {"node": node, "state": shell.node(node).state}


def undrain(cluster: str, node: str, reporter: Reporter) -> dict:
    """Let a drained node take jobs again."""
    record, shell = hpc_cluster(cluster, reporter)
    _known_node(record, shell, node)
    shell.scontrol("update", f"NodeName={node}", "State=RESUME")
    return {"node": node, "state": shell.node(node).state}


def drain_node(shell: SlurmShell, node: str, reporter: Reporter, timeout: float | None) -> None:
    """Drain `node` in Slurm; with a timeout, wait until its jobs ended (`drain --wait`, and
    `scale --remove` before the node goes)."""
    reporter.progress(f"draining {node} in Slurm")
    shell.scontrol("update", f"NodeName={node}", "State=DRAIN", f"Reason={DRAIN_REASON}")
    if timeout is not None:
        wait_idle(shell, node, timeout, reporter.progress)


def forget(shell: SlurmShell, node: str) -> None:
    """After the node's slurmd stopped: delete it from Slurm (a dynamic node)."""
    shell.scontrol("delete", f"NodeName={node}")
