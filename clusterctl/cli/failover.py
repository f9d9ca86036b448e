"""`clusterctl failover`, `standby`, `unstandby` and `cleanup`: operate the HA groups."""

from __future__ import annotations

import argparse

from clusterctl.cli.common import add_cluster_option, add_json_option, examples, print_result
from clusterctl.cluster import cleanup, failover, set_standby
from clusterctl.reporter import StderrReporter


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "failover",
        help="move a resource group to another node (planned switchover)",
        description="Move GROUP to NODE (or away from its current holder) and wait until it "
        "runs there. Stateless resources are started on the target first (make-before-break); "
        "the VIP always stops before it starts elsewhere.",
        epilog=examples("clusterctl failover web --to node2", "clusterctl failover web"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("group", help="resource group, e.g. web")
    parser.add_argument("--to", metavar="NODE", help="target node (default: any other)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    add_cluster_option(parser)
    add_json_option(parser)
    parser.set_defaults(func=run_failover)

    for name, on in (("standby", True), ("unstandby", False)):
        what = "releases its groups and takes none" if on else "may run groups again"
        p = sub.add_parser(
            name,
            help=f"{name} a node: it {what}",
            epilog=examples(f"clusterctl {name} node1"),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("node")
        add_cluster_option(p)
        add_json_option(p)
        p.set_defaults(func=run_standby, standby=on)

    p = sub.add_parser(
        "cleanup",
        help="reset a group's fail counts, so nodes it failed on may run it again",
        epilog=examples("clusterctl cleanup web"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("group")
    add_cluster_option(p)
    add_json_option(p)
    p.set_defaults(func=run_cleanup)


def run_failover(args: argparse.Namespace, reporter: StderrReporter) -> int:
    result = failover(args.cluster, args.group, args.to, reporter, timeout=args.timeout)
    if not result["changed"]:
        text = f"{args.group} already runs on {result['to']}"
    else:
        text = (
            f"{args.group} moved from {result['from'] or 'nowhere'} to {result['to']} "
            f"in {result['seconds']:.2f} s"
        )
    return print_result(args, result, text)


def run_standby(args: argparse.Namespace, reporter: StderrReporter) -> int:
    result = set_standby(args.cluster, args.node, args.standby)
    return print_result(args, result, result.get("sentence", f"{args.node} updated"))


def run_cleanup(args: argparse.Namespace, reporter: StderrReporter) -> int:
    result = cleanup(args.cluster, args.group)
    return print_result(args, result, result.get("sentence", f"{args.group} cleaned up"))
