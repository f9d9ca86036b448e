"""`clusterctl down`: remove a cluster."""

from __future__ import annotations

import argparse

from clusterctl.cli.common import add_cluster_option, examples
from clusterctl.cluster import down
from clusterctl.reporter import StderrReporter


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "down",
        help="remove a cluster's containers, network and state",
        description="Remove what `up` made for a cluster (also after an interrupted `up`). "
        "The node image stays cached unless --purge. For the ssh provider only the "
        "local state is removed; your hosts are left as they are.",
        epilog=examples("clusterctl down", "clusterctl down --cluster lab --purge"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_cluster_option(parser)
    parser.add_argument("--purge", action="store_true", help="also remove the cached node image")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, reporter: StderrReporter) -> int:
    removed = down(args.cluster, reporter, purge=args.purge)
    if not removed:
        reporter.info(f"cluster {args.cluster}: nothing to remove")
    for item in removed:
        reporter.info(f"removed {item}")
    return 0
