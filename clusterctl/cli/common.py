"""Options shared by several commands."""

from __future__ import annotations

import argparse
import json


def add_cluster_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster", "-c", default="demo", metavar="NAME", help="cluster name (default: demo)"
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON to stdout")


def examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def print_result(args: argparse.Namespace, data: dict, text: str) -> int:
    """Data to stdout: JSON with --json, else one human sentence."""
    print(json.dumps(data, indent=2) if args.json else text)
    return 0
