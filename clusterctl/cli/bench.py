"""`clusterctl bench`: benchmarks on real sandbox clusters (JSON + a Markdown table)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clusterctl.cli.common import examples
from clusterctl.reporter import ListReporter, StderrReporter

DEFAULT_OUT = Path("bench/results")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="measure failover outages or sandbox build times",
        epilog=examples(
            "clusterctl bench failover --trials 5",
            "clusterctl bench up --trials 3 --cold",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    fail = kinds.add_parser("failover", help="outage through the VIP per fault")
    fail.add_argument("--trials", type=int, default=5)
    fail.add_argument(
        "--fault",
        action="append",
        choices=["node_crash", "web_crash", "agent_kill", "planned_move"],
        help="repeatable; default: all",
    )
    fail.add_argument("--cluster", help="an existing ha sandbox (default: a new bench-ha)")
    fail.add_argument("--keep", action="store_true", help="keep the bench cluster afterwards")
    up = kinds.add_parser("up", help="cold / warm / no-op `up` times")
    up.add_argument("--trials", type=int, default=3)
    up.add_argument("--cold", action="store_true", help="also rebuild the node image once")
    up.add_argument("--profile", choices=["ha", "lb", "web"], default="ha")
    for p in (fail, up):
        p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for results")
    parser.set_defaults(func=run)


def _save(out: Path, name: str, result: dict, table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(table + "\n")


def run(args: argparse.Namespace, reporter: StderrReporter) -> int:
    from clusterctl import cluster as api

    if args.kind == "up":
        from clusterctl.bench import up

        result = up.run("bench-up", args.trials, args.cold, args.profile, reporter)
        table = up.table(result)
        _save(args.out, "up", result, table)
    else:
        from clusterctl.bench import failover

        cluster = args.cluster or "bench-ha"
        if not args.cluster:
            reporter.info("creating sandbox bench-ha (profile ha)")
            api.up(api.UpOptions(cluster=cluster, profile="ha"), reporter)
        try:
            faults = args.fault or list(failover.FAULTS)
            result = failover.run(cluster, args.trials, faults, reporter)
        finally:
            if not args.cluster and not args.keep:
                api.down(cluster, ListReporter())
        table = failover.table(result["summary"])
        _save(args.out, "failover", result, table)
    print(table)
    return 0
