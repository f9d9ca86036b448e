"""`clusterctl chaos`: random faults on a running sandbox cluster, then a verdict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clusterctl.chaos import ChaosOptions
from clusterctl.chaos import run as run_chaos
from clusterctl.cli.common import add_cluster_option, add_json_option, examples
from clusterctl.faults import KINDS
from clusterctl.reporter import StderrReporter


def register(sub: argparse._SubParsersAction) -> None:
    faults = "\n".join(f"  {name:17} {what}" for name, what in KINDS.items())
    parser = sub.add_parser(
        "chaos",
        help="inject random faults while a client uses the VIP; check safety and recovery",
        description="Faults, one at a time, at random (--seed makes a run repeatable):\n"
        + faults
        + "\n\nAt the end: two-holder samples, lost configuration, convergence and the "
        "history are checked; exit 1 on any violation. Sandbox (podman) clusters only.",
        epilog=examples(
            "clusterctl chaos --duration 600",
            "clusterctl chaos --duration 120 --seed 7 --faults crash,partition",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_cluster_option(parser)
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds of faults (default 600)"
    )
    parser.add_argument("--seed", type=int, help="random seed (default: a new one, printed)")
    parser.add_argument(
        "--faults", help="comma-separated kinds (default: every kind the profile has)"
    )
    parser.add_argument(
        "--rate", type=float, default=6.0, help="faults per minute at most (default 6)"
    )
    parser.add_argument("--out", type=Path, help="directory for chaos.json, chaos.md, timeline.svg")
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, reporter: StderrReporter) -> int:
    kinds = None if args.faults is None else tuple(k.strip() for k in args.faults.split(","))
    options = ChaosOptions(
        cluster=args.cluster,
        duration=args.duration,
        seed=args.seed,
        faults=kinds,
        rate=args.rate,
        out=args.out,
    )
    report = run_chaos(options, reporter, lambda seed: reporter.info(f"chaos seed {seed}"))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_table())
    if report.files:
        reporter.info(f"report: {report.files['table']}, timeline: {report.files['timeline']}")
    return 0 if report.verdict == "PASS" else 1
