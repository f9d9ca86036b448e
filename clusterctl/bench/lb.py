"""`clusterctl bench lb`: throughput and latency through the VIP, per LB engine.

wrk (Debian's package) runs on the host against: one backend directly, the VIP with the
`nft` engine, the VIP with the `haproxy` engine, and stock HAProxy with an equivalent
hand-written config (`mode http` and `mode tcp`) on a non-holder node. Targets of one engine
are measured interleaved, several repetitions; ratios are to direct in the same round.
Failed requests are also counted, with a client asking the VIP every 10 ms, while a
backend's web server crashes, while a node is added, and while one is drained and removed.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass

from clusterctl import cluster as api
from clusterctl import scale
from clusterctl.bench.prober import Prober
from clusterctl.errors import ClusterctlError
from clusterctl.providers.podman_cli import Podman
from clusterctl.reporter import ListReporter, Reporter
from clusterctl.state import StateDir

STOCK_PORT_HTTP = 8081
STOCK_PORT_TCP = 8082
STOCK_CONFIG = "/tmp/clusterctl-bench-stock-haproxy.cfg"
STOCK_PID = "/tmp/clusterctl-bench-stock.pid"


@dataclass(frozen=True)
class WrkResult:
    target: str
    engine: str
    round: int
    requests_per_s: float
    p99_ms: float
    errors: int
    fencings: int  # holders that fenced during the run (each moves the VIP: a false failover)


def parse_wrk(text: str) -> tuple[float, float, int]:
    """(requests/s, p99 latency in ms, socket errors + non-2xx) from wrk --latency output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    scale_to_ms = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = float(p99.group(1)) * scale_to_ms[p99.group(2)] if p99 else float("nan")
    errors = 0
    for match in re.finditer(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        errors += sum(int(x) for x in match.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    return rps, latency, errors


def stock_haproxy_config(backends: list[str]) -> str:
    """An equivalent hand-written config: what an operator would write for stock HAProxy
    (same timeouts, retries, redispatch and HTTP checks as the engine's; maxconn left to
    HAProxy, which sizes it from the file-descriptor limit, as for the engine)."""
    servers = "\n".join(
        f"    server n{i} {a}:80 check inter 500 rise 2 fall 2" for i, a in enumerate(backends, 1)
    )
    return f"""global
    stats timeout 30s
defaults
    timeout connect 5s
    timeout client 50s
    timeout server 50s
    timeout check 1s
    retries 3
    option redispatch
    option httpchk GET /healthz
    http-check expect status 200
frontend http_in
    mode http
    bind *:{STOCK_PORT_HTTP}
    default_backend web_http
backend web_http
    mode http
    balance roundrobin
{servers}
frontend tcp_in
    mode tcp
    bind *:{STOCK_PORT_TCP}
    default_backend web_tcp
backend web_tcp
    mode tcp
    balance roundrobin
{servers}
"""


class LbBench:
    def __init__(self, cluster: str, reporter: Reporter, duration: int, connections: int):
        self.cluster = cluster
        self.reporter = reporter
        self.duration = duration
        self.connections = connections
        self.state = StateDir(cluster)
        self.podman = Podman(self.state.root)
        if shutil.which("wrk") is None:
            raise ClusterctlError("wrk is not installed", "run `make deps` (apt-get install wrk)")

    @property
    def record(self):
        return self.state.load()

    def wrk(self, url: str) -> tuple[float, float, int]:
        proc = subprocess.run(
            ["wrk", "-t2", f"-c{self.connections}", f"-d{self.duration}s", "--latency", url],
            capture_output=True,
            text=True,
            timeout=self.duration + 30,
        )
        if proc.returncode != 0:
            raise ClusterctlError(f"wrk failed: {proc.stderr.strip()[-200:]}", "see wrk --help")
        return parse_wrk(proc.stdout)

    def holder(self) -> str:
        status = api.status(self.cluster)
        group = next(g for g in status.groups if g.name == "web")
        return group.node

    def fencings_since(self, epoch: float) -> int:
        """How many times an agent fenced (stopped its groups) since ``epoch``, all nodes."""
        total = 0
        for node in self.record.nodes:
            proc = self.podman.run(
                "exec", node.container, "journalctl", "-u", "clusterctl-agent", "-o", "cat",
                "--no-pager", "--since", f"@{int(epoch)}",
                check=False,
            )  # fmt: skip
            total += sum(1 for line in proc.stdout.splitlines() if "fencing" in line)
        return total

    def start_stock(self, node: str) -> str:
        """Stock HAProxy on a non-holder node; returns its address."""
        record = self.record
        backends = [n.address for n in record.nodes]
        target = next(n for n in record.nodes if n.name == node)
        container = target.container
        self.podman.run(
            "exec", "-i", container, "sh", "-c", f"cat > {STOCK_CONFIG}",
            stdin=stock_haproxy_config(backends).encode(),
        )  # fmt: skip
        self.podman.run("exec", container, "haproxy", "-D", "-f", STOCK_CONFIG,
                        "-p", STOCK_PID)  # fmt: skip
        time.sleep(0.5)
        return target.address

    def stop_stock(self, node: str) -> None:
        container = self.record.require_node(node).container
        self.podman.run(
            "exec", container, "sh", "-c",
            f"kill $(cat {STOCK_PID}) 2>/dev/null; rm -f {STOCK_PID}",
            check=False,
        )  # fmt: skip

    def throughput(self, engine: str, rounds: int, with_stock: bool) -> list[WrkResult]:
        record = self.record
        holder = self.holder()
        other = next(n for n in record.nodes if n.name != holder)
        direct = next(n for n in record.nodes if n.name not in (holder, other.name))
        targets = {"direct": f"http://{direct.address}/", f"vip-{engine}": f"http://{record.vip}/"}
        if with_stock:
            address = self.start_stock(other.name)
            targets["stock-haproxy-http"] = f"http://{address}:{STOCK_PORT_HTTP}/"
            targets["stock-haproxy-tcp"] = f"http://{address}:{STOCK_PORT_TCP}/"
        results = []
        try:
            for number in range(1, rounds + 1):
                for target, url in targets.items():  # interleaved within a round
                    began = time.time()
                    rps, p99, errors = self.wrk(url)
                    fenced = self.fencings_since(began)
                    results.append(WrkResult(target, engine, number, rps, p99, errors, fenced))
                    self.reporter.info(
                        f"round {number} {target}: {rps:,.0f} req/s, p99 {p99:.2f} ms, "
                        f"{errors} errors, {fenced} fencings"
                    )
        finally:
            if with_stock:
                self.stop_stock(other.name)
        return results

    def failures_during(self, what: str, action) -> dict:
        prober = Prober(f"http://{self.record.vip}/", period=0.01, timeout=1.0).start()
        time.sleep(1.0)
        action()
        time.sleep(3.0)
        samples = prober.stop()
        failed = sum(1 for s in samples if not s.ok)
        nodes = sorted({s.node for s in samples if s.ok})
        self.reporter.info(f"{what}: {failed} failed of {len(samples)} requests")
        return {"event": what, "requests": len(samples), "failed": failed, "answered_by": nodes}

    def events(self, engine: str) -> list[dict]:
        record = self.record
        holder = self.holder()
        victim = next(n for n in record.nodes if n.name != holder)
        out = [
            self.failures_during(
                f"{engine}: backend web server crash ({victim.name})",
                lambda: self.podman.run(
                    "exec", victim.container, "systemctl", "kill", "-s", "KILL", "nginx"
                ),
            )
        ]
        self.podman.run("exec", victim.container, "systemctl", "start", "nginx")
        time.sleep(2.0)
        added: list[str] = []
        out.append(
            self.failures_during(
                f"{engine}: scale out (+1 node)",
                lambda: added.extend(scale.add(self.cluster, 1, ListReporter())),
            )
        )
        if added:
            out.append(
                self.failures_during(
                    f"{engine}: drain and remove {added[0]}",
                    lambda: scale.remove(self.cluster, added[0], ListReporter()),
                )
            )
        return out


def summarize(results: list[WrkResult]) -> list[dict]:
    rows = []
    by_engine: dict[str, list[WrkResult]] = {}
    for r in results:
        by_engine.setdefault(r.engine, []).append(r)
    for engine, items in by_engine.items():
        rounds = sorted({r.round for r in items})
        for target in dict.fromkeys(r.target for r in items):
            ratios = []
            for number in rounds:
                direct = next(r for r in items if r.round == number and r.target == "direct")
                mine = next(r for r in items if r.round == number and r.target == target)
                ratios.append(mine.requests_per_s / direct.requests_per_s)
            mine_all = [r for r in items if r.target == target]
            rps = statistics.median(r.requests_per_s for r in mine_all)
            rows.append(
                {
                    "engine_run": engine,
                    "target": target,
                    "requests_per_s_median": round(rps),
                    "p99_ms_median": round(statistics.median(r.p99_ms for r in mine_all), 2),
                    "ratio_to_direct_median": round(statistics.median(ratios), 2),
                    "errors": sum(r.errors for r in mine_all),
                    "fencings": sum(r.fencings for r in mine_all),
                }
            )
    return rows


def table(rows: list[dict], events: list[dict]) -> str:
    lines = [
        "| run | target | req/s (median) | p99 (ms) | ratio to direct | errors | fencings |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine_run']} | {r['target']} | {r['requests_per_s_median']:,} | "
            f"{r['p99_ms_median']} | {r['ratio_to_direct_median']:.2f} | {r['errors']} | "
            f"{r['fencings']} |"
        )
    lines += ["", "| event | requests | failed |", "|---|---|---|"]
    lines += [f"| {e['event']} | {e['requests']} | {e['failed']} |" for e in events]
    return "\n".join(lines)


def run(
    cluster: str,
    rounds: int,
    duration: int,
    connections: int,
    lease_ttl: int,
    reporter: Reporter,
    engines: tuple[str, ...] = ("nft", "haproxy"),
) -> dict:
    bench = LbBench(cluster, reporter, duration, connections)
    results: list[WrkResult] = []
    events: list[dict] = []
    for engine in engines:
        reporter.info(f"switching the LB engine to {engine} (lease TTL {lease_ttl} s)")
        api.up(
            api.UpOptions(cluster=cluster, lb_engine=engine, lease_ttl=lease_ttl), ListReporter()
        )
        time.sleep(3.0)
        results += bench.throughput(engine, rounds, with_stock=engine == "haproxy")
        events += bench.events(engine)
    rows = summarize(results)
    return {
        "benchmark": "lb",
        "wrk": {"threads": 2, "connections": connections, "duration_s": duration},
        "rounds": rounds,
        "lease_ttl_s": lease_ttl,
        "summary": rows,
        "events": events,
        "runs": [asdict(r) for r in results],
    }
