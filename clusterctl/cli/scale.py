"""`clusterctl scale`: add nodes, or drain and remove one."""

from __future__ import annotations

import argparse
import json

from clusterctl import scale
from clusterctl.cli.common import add_cluster_option, add_json_option, examples
from clusterctl.reporter import StderrReporter


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "scale",
        help="add nodes, or drain and remove one",
        description="--add provisions only the new nodes (the others restart nothing); with "
        "the ssh provider, add the hosts to your inventory first and the new ones are found. "
        "--remove drains the node's backend, moves its groups away, stops its services and "
        "deletes it (sandbox) or forgets it (ssh). etcd member nodes cannot be removed.",
        epilog=examples("clusterctl scale --add 1", "clusterctl scale --remove node4"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--add", type=int, metavar="N", nargs="?", const=0, help="nodes to add")
    what.add_argument("--remove", metavar="NODE", help="node to drain and remove")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    add_cluster_option(parser)
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, reporter: StderrReporter) -> int:
    if args.remove:
        scale.remove(args.cluster, args.remove, reporter, drain_timeout=args.drain_timeout)
        data, text = {"removed": [args.remove]}, f"removed {args.remove}"
    else:
        added = scale.add(args.cluster, args.add or None, reporter)
        data, text = {"added": added}, f"added {', '.join(added)}"
    print(json.dumps(data) if args.json else text)
    return 0
