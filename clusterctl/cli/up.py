"""`clusterctl up`: create or converge a cluster."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clusterctl.cli.common import add_cluster_option, add_json_option, examples
from clusterctl.cluster import UpOptions, UpResult, profile_settings, up
from clusterctl.profiles import DEFAULT_PROFILE, PROFILES, VM_PORT, VM_STATUS_PATH
from clusterctl.reporter import StderrReporter
from clusterctl.runner import PlaybookFailed


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "up",
        help="create (or converge) a cluster",
        description="Create the nodes if needed and converge them with playbooks/site.yml. "
        "Running it again on a converged cluster changes nothing.",
        epilog=examples(
            "clusterctl up                       # 3-node podman sandbox named demo",
            "clusterctl up --cluster lab --nodes 5 --subnet 10.213.50.0/24",
            "clusterctl up --provider ssh -i inventories/sample/hosts.yml --cluster prod",
            "clusterctl up --check --diff        # what would change (drift); changes nothing",
            "clusterctl up --full                # converge even if no node changed",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_cluster_option(parser)
    parser.add_argument(
        "--nodes", "-n", type=int, help="sandbox node count (>= 3; default 3, or the cluster's own)"
    )
    parser.add_argument("--provider", choices=["podman", "ssh"], default="podman")
    parser.add_argument("-i", "--inventory", type=Path, help="inventory of existing hosts (ssh)")
    parser.add_argument(
        "--profile",
        choices=list(PROFILES),
        help=f"default {DEFAULT_PROFILE}; "
        + "; ".join(f"{name}: {what}" for name, what in PROFILES.items()),
    )
    parser.add_argument(
        "--lb-engine",
        choices=["nft", "haproxy"],
        help="profile lb: nft (kernel L4, default) or haproxy (HTTP checks, retries)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=int,
        metavar="SECONDS",
        help="failover agent's lease, whole seconds (default 1: failover in about a second; "
        "2: fewer false failovers when a small LB node's CPU is saturated)",
    )
    parser.add_argument(
        "--fencing",
        action="store_true",
        help="sandbox: the nodes fence each other through a fence device on this host "
        "(groups with fencing: required need it; kept once set)",
    )
    parser.add_argument(
        "--groups",
        type=Path,
        metavar="FILE",
        help="resource groups of your own (a YAML or JSON list in the agent's group syntax; "
        "kept for later runs)",
    )
    parser.add_argument("--subnet", help="sandbox subnet in CIDR (default: a free 10.213.x.0/24)")
    parser.add_argument(
        "--no-converge", action="store_true", help="only create the nodes; do not run Ansible"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="report what a converge would change on an existing cluster; change nothing",
    )
    parser.add_argument(
        "--diff", action="store_true", help="show the file differences a converge makes (or would)"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="converge even when every node matches its last converge (by default a re-run "
        "compares each node's files, units, boot links and packages first, in one task)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, reporter: StderrReporter) -> int:
    options = UpOptions(
        cluster=args.cluster,
        provider=args.provider,
        nodes=args.nodes,
        subnet=args.subnet,
        inventory=args.inventory,
        converge=not args.no_converge,
        profile=args.profile,
        lb_engine=args.lb_engine,
        lease_ttl=args.lease_ttl,
        fencing=args.fencing,
        groups_file=args.groups,
        check=args.check,
        diff=args.diff,
        full=args.full,
    )
    try:
        result = up(options, reporter)
    except PlaybookFailed as exc:
        for line in exc.result.recap_lines():
            reporter.info(line)
        raise
    if result.playbook is not None and args.diff:
        for change in result.playbook.changes:
            reporter.info(f"{change.host}: {change.task}")
            for line in change.diff.splitlines():
                reporter.info("    " + line)
    if result.playbook is not None:
        reporter.info("recap:")
        for line in result.playbook.recap_lines():
            reporter.info("  " + line)
    record = result.record
    if args.check:
        return _report_check(args, result)
    if args.json:
        print(
            json.dumps(
                {
                    "cluster": record.name,
                    "provider": record.provider,
                    "subnet": record.subnet,
                    "profile": record.profile,
                    "vip": record.vip,
                    **profile_settings(record),
                    "inventory": str(result.inventory),
                    "changed": result.playbook.changed if result.playbook else None,
                    "started": result.started,
                    "nodes": [{"name": n.name, "address": n.address} for n in record.nodes],
                },
                indent=2,
            )
        )
        return 0
    again = " again" if result.started and len(result.started) == len(record.nodes) else ""
    print(f"cluster {record.name} is up{again} ({record.provider}, {len(record.nodes)} nodes)")
    for node in record.nodes:
        print(f"  {node.name:<10} {node.address:<16} http://{node.address}/")
    if record.profile == "ha" and record.vip:
        print(f"VIP: http://{record.vip}/  (group web: VIP + nginx, on one node at a time)")
    if record.profile == "lb" and record.vip:
        print(f"VIP: http://{record.vip}/  (group web: VIP + load balancer over every node)")
    if record.profile == "vm" and record.vip:
        print(
            f"VIP: http://{record.vip}:{VM_PORT}{VM_STATUS_PATH}  (group vm: VIP + the guest "
            "demo-vm, on one node at a time)"
        )
    print(f"inventory: {result.inventory}")
    return 0


def _report_check(args: argparse.Namespace, result: UpResult) -> int:
    """What a converge would change: one line per task, data with --json; exit 0 either way
    (drift is an answer, not an error)."""
    playbook = result.playbook
    changes = playbook.changes if playbook else []
    if args.json:
        print(json.dumps({
            "cluster": result.record.name,
            "check": True,
            "changed": playbook.changed if playbook else 0,
            "changes": [{"host": c.host, "task": c.task, "diff": c.diff} for c in changes],
        }, indent=2))  # fmt: skip
        return 0
    if not changes:
        print(f"cluster {result.record.name}: a converge would change nothing")
        return 0
    print(f"cluster {result.record.name}: a converge would change {len(changes)} thing(s):")
    for change in changes:
        print(f"  {change.host:<10} {change.task}")
    return 0
