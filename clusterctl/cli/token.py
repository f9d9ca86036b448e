"""`clusterctl token rotate`: replace the agents' API token without an outage."""

from __future__ import annotations

import argparse

from clusterctl.cli.common import add_cluster_option, add_json_option, examples, print_result
from clusterctl.reporter import StderrReporter


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "token",
        help="manage the agents' API token",
        epilog=examples("clusterctl token rotate", "clusterctl token rotate --cluster prod"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    rotate = actions.add_parser(
        "rotate",
        help="replace the token everywhere; no agent restarts, no request fails",
        description="Give every agent a new API token next to the current one, switch "
        "clusterctl to it, then remove the old one; the agents re-read their token file "
        "(systemctl reload), so no group moves.",
        epilog=examples("clusterctl token rotate"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_cluster_option(rotate)
    add_json_option(rotate)
    rotate.set_defaults(func=run_rotate)


def run_rotate(args: argparse.Namespace, reporter: StderrReporter) -> int:
    from clusterctl.rotate import rotate_token

    result = rotate_token(args.cluster, reporter)
    return print_result(
        args, result, f"cluster {args.cluster}: API token rotated on {len(result['nodes'])} nodes"
    )
