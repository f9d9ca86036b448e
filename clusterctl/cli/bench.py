"""`clusterctl bench`: benchmarks on real sandbox clusters (JSON + a Markdown table)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clusterctl.bench.failover import FAULTS
from clusterctl.cli.common import examples
from clusterctl.profiles import DEFAULT_PROFILE, PROFILES
from clusterctl.reporter import ListReporter, StderrReporter

DEFAULT_OUT = Path("bench/results")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="measure failover outages, load-balancer throughput, hpc, sandbox build times, scale",
        epilog=examples(
            "clusterctl bench failover --trials 5",
            "clusterctl bench lb --rounds 3",
            "clusterctl bench up --trials 3 --cold",
            "clusterctl bench up --nodes 3 --nodes 6 --nodes 12 --profile web --trials 1",
            "clusterctl bench fence --trials 5",
            "clusterctl bench hpc --trials 5 --slurm-timeout 120 --slurm-timeout 1",
            "clusterctl bench scale --agents 10 --agents 50 --window 30 --reads direct",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    fail = kinds.add_parser("failover", help="outage through the VIP per fault")
    fail.add_argument("--trials", type=int, default=5)
    fail.add_argument(
        "--fault",
        action="append",
        choices=list(FAULTS),
        help="repeatable; default: all",
    )
    fail.add_argument("--cluster", help="an existing ha sandbox (default: a new bench-ha)")
    fail.add_argument("--keep", action="store_true", help="keep the bench cluster afterwards")
    lb = kinds.add_parser("lb", help="wrk through the VIP per engine vs direct and stock HAProxy")
    lb.add_argument("--rounds", type=int, default=3, help="interleaved repetitions per engine")
    lb.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    lb.add_argument("--connections", type=int, default=64, help="wrk connections")
    lb.add_argument(
        "--lease-ttl",
        type=int,
        default=1,
        help="agent lease TTL for the run (results go to lb-lease<N>.json/.md)",
    )
    lb.add_argument(
        "--engine", action="append", choices=["nft", "haproxy"], help="repeatable; default: both"
    )
    lb.add_argument("--cluster", help="an existing lb sandbox (default: a new bench-lb)")
    lb.add_argument("--keep", action="store_true", help="keep the bench cluster afterwards")
    up = kinds.add_parser("up", help="cold / warm / no-op `up` times")
    up.add_argument("--trials", type=int, default=3)
    up.add_argument("--cold", action="store_true", help="also rebuild the node image once")
    up.add_argument("--profile", choices=list(PROFILES), default=DEFAULT_PROFILE)
    up.add_argument(
        "--nodes",
        type=int,
        action="append",
        help="repeatable: warm and no-op `up` per node count, and the seconds per extra node "
        "(without: the default count only, with `up --full` too)",
    )
    fence = kinds.add_parser(
        "fence", help="writer gaps with and without fencing, and the fence device's time"
    )
    fence.add_argument("--trials", type=int, default=5, help="trials per fault")
    fence.add_argument(
        "--fault", action="append", choices=["crash", "freeze"], help="repeatable; default: both"
    )
    fence.add_argument("--cluster", help="an existing sandbox made with `up --fencing`")
    fence.add_argument("--keep", action="store_true", help="keep the bench cluster afterwards")
    hpc = kinds.add_parser(
        "hpc",
        help="controller failover vs Slurm's backup controller, job launch, primes, scale out",
    )
    hpc.add_argument("--trials", type=int, default=5, help="failover trials per controller")
    hpc.add_argument(
        "--slurm-timeout",
        type=int,
        action="append",
        help="SlurmctldTimeout of a backup-controller run, repeatable (default: 120 and 1)",
    )
    hpc.add_argument("--nodes", type=int, default=3, help="nodes before the scale-out step")
    vm = kinds.add_parser(
        "vm", help="virtual machine: crash failover, live move (pause, failed requests), boot"
    )
    vm.add_argument("--trials", type=int, default=5, help="trials of each fault")
    for p in (fail, lb, up, fence, hpc, vm):
        p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for results")
    scale = kinds.add_parser(
        "scale",
        help="N agents (the real agent code, no-op resources) on a 3-member etcd on loopback: "
        "etcd's CPU, memory and requests, renewals, fencings, failover",
    )
    scale.add_argument(
        "--agents", type=int, action="append", help="agents in one run, repeatable (default: 10)"
    )
    scale.add_argument("--window", type=float, default=30.0, help="seconds measured per run")
    scale.add_argument(
        "--reads",
        choices=["direct", "watch"],
        default="direct",
        help="each agent reads the keyspace every step, or one watched copy per process",
    )
    scale.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    scale.add_argument("--workers", type=int, default=4, help="processes the agents run in")
    scale.add_argument(
        "--out", type=Path, default=DEFAULT_OUT / "scale", help="directory for results"
    )
    parser.set_defaults(func=run)


def _save(out: Path, name: str, result: dict, table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(table + "\n")


@contextmanager
def _bench_cluster(
    args: argparse.Namespace,
    default: str,
    profile: str,
    reporter: StderrReporter,
    fencing: bool = False,
) -> Iterator[str]:
    """The cluster named by --cluster, or a new sandbox removed afterwards unless --keep."""
    from clusterctl import cluster as api

    if args.cluster:
        yield args.cluster
        return
    reporter.info(f"creating sandbox {default} (profile {profile})")
    api.up(api.UpOptions(cluster=default, profile=profile, fencing=fencing), reporter)
    try:
        yield default
    finally:
        if not args.keep:
            api.down(default, ListReporter())


def run(args: argparse.Namespace, reporter: StderrReporter) -> int:
    if args.kind == "scale":
        from clusterctl.bench import scale

        result = scale.run(
            args.agents or [10], args.window, args.reads, reporter, args.workers, args.warmup
        )
        table = scale.table(result["rows"])
        _save(args.out, f"scale-{args.reads}", result, table)
    elif args.kind == "up":
        from clusterctl.bench import up

        result = up.run(
            "bench-up", args.trials, args.cold, args.profile, reporter, sizes=args.nodes
        )
        table = up.table(result)
        _save(args.out, "up", result, table)
    elif args.kind == "lb":
        from clusterctl.bench import lb

        with _bench_cluster(args, "bench-lb", "lb", reporter) as cluster:
            engines = tuple(args.engine or ("nft", "haproxy"))
            result = lb.run(
                cluster, args.rounds, args.duration, args.connections, args.lease_ttl,
                reporter, engines,
            )  # fmt: skip
        table = lb.table(result["summary"], result["events"])
        _save(args.out, f"lb-lease{args.lease_ttl}", result, table)
    elif args.kind == "hpc":
        from clusterctl import cluster as api
        from clusterctl.bench import hpc

        # its own sandbox, always: the backup-controller runs rewrite slurm.conf
        reporter.info("creating sandbox bench-hpc (profile hpc)")
        started = time.monotonic()
        api.up(api.UpOptions(cluster="bench-hpc", profile="hpc", nodes=args.nodes), reporter)
        up_seconds = round(time.monotonic() - started, 1)  # from the cached image and layer
        try:
            result = hpc.run("bench-hpc", args.trials, args.slurm_timeout or [120, 1], reporter)
        finally:
            api.down("bench-hpc", ListReporter())
        result.update(up_s=up_seconds, up_nodes=args.nodes)
        table = hpc.table(result)
        _save(args.out, "hpc", result, table)
    elif args.kind == "vm":
        from clusterctl import cluster as api
        from clusterctl.bench import vm

        reporter.info("creating sandbox bench-vm (profile vm)")
        api.up(api.UpOptions(cluster="bench-vm", profile="vm"), reporter)
        try:
            result = vm.run("bench-vm", args.trials, reporter)
        finally:
            api.down("bench-vm", ListReporter())
        table = vm.table(result)
        _save(args.out, "vm", result, table)
    elif args.kind == "fence":
        from clusterctl.bench import fence

        with _bench_cluster(args, "bench-fence", "ha", reporter, fencing=True) as cluster:
            result = fence.run(cluster, args.trials, args.fault or list(fence.FAULTS), reporter)
        table = fence.table(result["summary"])
        _save(args.out, "fence", result, table)
    else:
        from clusterctl.bench import failover

        with _bench_cluster(args, "bench-ha", "ha", reporter) as cluster:
            faults = args.fault or list(failover.FAULTS)
            result = failover.run(cluster, args.trials, faults, reporter)
        table = failover.table(result["summary"])
        _save(args.out, "failover", result, table)
    print(table)
    return 0
