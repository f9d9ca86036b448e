"""`clusterctl hpc run`: one Slurm job across the cluster's nodes, its output streamed."""

from __future__ import annotations

import argparse

from clusterctl import hpc
from clusterctl.cli.common import add_cluster_option, examples
from clusterctl.errors import ClusterctlError
from clusterctl.reporter import StderrReporter
from clusterctl.slurm import EXAMPLES_DIR


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "hpc",
        help="HPC clusters: run a job across the nodes",
        description="Slurm on an hpc cluster (`clusterctl up --profile hpc`). `srun` and "
        "`sbatch` on any node work as usual; drain and undrain a node with "
        "`clusterctl drain NODE` / `undrain NODE`, its state is in `clusterctl status`.",
    )
    commands = parser.add_subparsers(dest="hpc_command", required=True)
    run_parser = commands.add_parser(
        "run",
        help="run a command as one Slurm job (srun) and stream its output",
        epilog=examples(
            f"clusterctl hpc run -N 3 -- python3 {EXAMPLES_DIR}/primes.py 100000000",
            "clusterctl hpc run -- hostname          # one task on every node",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_parser.add_argument(
        "-N", "--nodes", type=int, help="nodes the job spans (default: every node)"
    )
    run_parser.add_argument(
        "-n", "--ntasks", type=int, help="tasks (MPI ranks; default one per node)"
    )
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    add_cluster_option(run_parser)
    run_parser.set_defaults(func=run)


def run(args: argparse.Namespace, reporter: StderrReporter) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    status = hpc.run_job(args.cluster, command, args.nodes, args.ntasks, reporter)
    if status != 0:
        raise ClusterctlError(
            f"the job failed (srun exit status {status})",
            "its output is above; `clusterctl status` shows the nodes' Slurm states",
        )
    return 0
