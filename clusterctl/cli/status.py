"""`clusterctl status`: nodes (and later groups and backends) of a cluster."""

from __future__ import annotations

import argparse
import sys
import time

from clusterctl.cli.common import add_cluster_option, add_json_option, examples
from clusterctl.cluster import status
from clusterctl.errors import ClusterctlError
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
    parser.add_argument(
        "--watch", action="store_true", help="redraw every second until Ctrl-C (like crm_mon)"
    )
    parser.set_defaults(func=run)


WATCH_INTERVAL = 1.0


def run(args: argparse.Namespace, reporter: StderrReporter) -> int:
    if not args.watch:
        result = status(args.cluster)
        print(result.to_json() if args.json else result.to_table())
        return 0
    if args.json:
        raise ClusterctlError("--watch redraws a table", "drop --json, or poll `status --json`")
    redraw = sys.stdout.isatty()
    try:
        while True:
            started = time.monotonic()
            text = status(args.cluster).to_table()
            stamp = time.strftime("%H:%M:%S")
            # on a terminal: clear and draw from the top; in a pipe: one block per second
            print(("\033[H\033[2J" if redraw else "") + f"{stamp}  {text}\n", flush=True)
            time.sleep(max(0.0, WATCH_INTERVAL - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0
