"""`clusterctl drain`, `undrain` and `weight`: LB backends; on an hpc cluster, drain and
undrain are Slurm's (no new jobs on the node; running ones finish)."""

from __future__ import annotations

import argparse

from clusterctl import hpc
from clusterctl.agent.apiclient import MAX_BACKEND_WEIGHT
from clusterctl.backends import drain, set_weight, undrain
from clusterctl.cli.common import add_cluster_option, add_json_option, examples, print_result
from clusterctl.reporter import StderrReporter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drain",
        help="stop new connections to a node's backend and wait for active ones to end "
        "(hpc: no new jobs on the node; running ones finish)",
        epilog=examples(
            "clusterctl drain node2",
            "clusterctl drain node2 --timeout 120",
            "clusterctl drain node4 --wait    # hpc: and wait until its jobs ended",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("node")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    p.add_argument(
        "--wait", action="store_true", help="hpc: wait (up to --timeout) for the node's jobs"
    )
    add_cluster_option(p)
    add_json_option(p)
    p.set_defaults(func=run_drain)

    p = sub.add_parser(
        "undrain",
        help="let a drained backend take new connections again (hpc: new jobs)",
        epilog=examples("clusterctl undrain node2"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("node")
    add_cluster_option(p)
    add_json_option(p)
    p.set_defaults(func=run_undrain)

    p = sub.add_parser(
        "weight",
        help=f"set a backend's weight (0-{MAX_BACKEND_WEIGHT}; 0 takes no new connections)",
        epilog=examples("clusterctl weight node2 3"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("node")
    p.add_argument("weight", type=int)
    add_cluster_option(p)
    add_json_option(p)
    p.set_defaults(func=run_weight)


def run_drain(args: argparse.Namespace, reporter: StderrReporter) -> int:
    if hpc.is_hpc(args.cluster):
        result = hpc.drain(
            args.cluster, args.node, reporter, timeout=args.timeout if args.wait else None
        )
        done = "and its jobs ended" if args.wait else "(running jobs finish; no new ones)"
        return print_result(args, result, f"{args.node} drained in Slurm {done}")
    result = drain(args.cluster, args.node, reporter, timeout=args.timeout)
    return print_result(args, result, f"{args.node} drained in {result['seconds']:.1f} s")


def run_undrain(args: argparse.Namespace, reporter: StderrReporter) -> int:
    if hpc.is_hpc(args.cluster):
        result = hpc.undrain(args.cluster, args.node, reporter)
        return print_result(args, result, f"{args.node} takes new jobs again")
    result = undrain(args.cluster, args.node)
    return print_result(args, result, f"{args.node} takes new connections again")


def run_weight(args: argparse.Namespace, reporter: StderrReporter) -> int:
    result = set_weight(args.cluster, args.node, args.weight)
    return print_result(args, result, f"{args.node} weight {result.get('weight')}")
