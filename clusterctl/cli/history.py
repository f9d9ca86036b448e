"""`clusterctl history`: what the agents did, when and why (failovers, fences, restarts)."""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import asdict

from clusterctl.cli.common import add_cluster_option, add_json_option, examples
from clusterctl.cluster import history
from clusterctl.errors import ClusterctlError
from clusterctl.reporter import StderrReporter
from clusterctl.status import table, when

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "history",
        help="the cluster's transitions: acquired, released, fenced, restarted, backends",
        epilog=examples(
            "clusterctl history",
            "clusterctl history --group web --since 1h",
            "clusterctl history --json",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_cluster_option(parser)
    parser.add_argument("--group", metavar="NAME", help="only this group (and node-wide events)")
    parser.add_argument(
        "--since", metavar="AGE", help="only the last AGE: 90s, 15m, 1h, 2d (default: all kept)"
    )
    parser.add_argument("--limit", type=int, default=1000, help="at most this many, the newest")
    add_json_option(parser)
    parser.set_defaults(func=run)


def parse_age(text: str) -> float:
    """Seconds in "90s", "15m", "1h", "2d" (a bare number is seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ClusterctlError(
            f"--since {text!r} is not an age", "use a number and a unit: 90s, 15m, 1h or 2d"
        )
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def run(args: argparse.Namespace, reporter: StderrReporter) -> int:
    if not 1 <= args.limit <= 100_000:
        raise ClusterctlError(f"--limit {args.limit} is out of range", "use 1 to 100000")
    since = time.time() - parse_age(args.since) if args.since else None
    entries = history(args.cluster, args.group, since, args.limit)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    if not entries:
        print("no history recorded" + (f" in the last {args.since}" if args.since else ""))
        return 0
    rows = [("TIME", "NODE", "EVENT", "GROUP", "REASON")]
    rows += [(when(e.at), e.node, e.event, e.group or "-", e.reason) for e in entries]
    print("\n".join(table(rows)))
    return 0
