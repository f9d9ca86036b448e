"""`clusterctl status`: nodes (and later groups and backends) of a cluster."""

from __future__ import annotations

import argparse

from clusterctl.cli.common import add_cluster_option, add_json_option, examples
from clusterctl.cluster import status
from clusterctl.reporter import StderrReporter


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "status",
        help="show nodes: address, reachable over SSH, web server answering",
        epilog=examples("clusterctl status", "clusterctl status --cluster lab --json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_cluster_option(parser)
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, reporter: StderrReporter) -> int:
    result = status(args.cluster)
    print(result.to_json() if args.json else result.to_table())
    return 0
