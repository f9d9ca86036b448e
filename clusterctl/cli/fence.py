"""`clusterctl fence NODE --confirm`: an operator's word that a node is off."""

from __future__ import annotations

import argparse

from clusterctl.cli.common import add_cluster_option, add_json_option, examples, print_result
from clusterctl.cluster import confirm_fenced
from clusterctl.errors import ClusterctlError
from clusterctl.reporter import StderrReporter

WARNING = (
    "only confirm a node you have seen off (powered down, unplugged): if it still runs, a "
    "group on shared storage may run on two nodes and corrupt its data"
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "fence",
        help="confirm that a node is off, so its fencing groups may start elsewhere",
        description="A group with fencing: required starts on a new node only after its "
        "previous owner was powered off through its fence device. When that device cannot "
        "do it (a dead BMC, a node pulled from the rack), say the node is off with --confirm "
        "(like Pacemaker's stonith_admin --confirm). " + WARNING[0].upper() + WARNING[1:] + ".",
        epilog=examples("clusterctl fence node2 --confirm"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("node")
    parser.add_argument(
        "--confirm", action="store_true", help="the node is off: release what it owns"
    )
    add_cluster_option(parser)
    add_json_option(parser)
    parser.set_defaults(func=run_fence)


def run_fence(args: argparse.Namespace, reporter: StderrReporter) -> int:
    if not args.confirm:
        raise ClusterctlError(
            "nothing to do without --confirm",
            "agents fence nodes themselves; "
            f"`clusterctl fence {args.node} --confirm` says it is off",
        )
    reporter.warn(WARNING)
    result = confirm_fenced(args.cluster, args.node)
    return print_result(args, result, result.get("sentence", f"{args.node} confirmed off"))
