"""`clusterctl bench scale`: what N agents cost etcd, and whether the agents stay safe.

For each N: N agents running the real agent code (``Agent`` over ``EtcdStore``, the real
``AgentConfig`` with its default timings) against a real 3-member etcd on loopback, started
here and removed at the end. Their one group (``bench``, every agent may hold it) has one
resource whose commands go to a runner that only remembers them (``NullRunner``): nothing on
the host is touched, no VIP. One cluster name (key prefix) per N.

The agents run in worker processes (spawned), one thread per agent, each thread looping as
the daemon does: ``startup_cleanup()`` once, then ``step()`` and a wait until
``next_wakeup()`` on an event of its own (something may wake it early: the watch-mode
mirror's listener). The first holder runs alone in a process started first; once it holds
the group the others start. After a warm-up, a measurement window: etcd's CPU (utime + stime
of the 3 members, in cores) and largest member's RSS, requests per second by kind from the
members' ``/metrics``, renewal latencies and failures, fencings, and the workers' own CPU.
Then the holder's process is killed (SIGKILL) and the time until another agent's step
acquired the group is measured (``time.monotonic`` is one clock for every process).

``--reads watch`` gives each worker one ``KeyspaceMirror`` (``make_state_reader``) whose
listener wakes every agent of that worker (as the daemon's wakes its loop); its quiet idle
agents then sleep until their renewal (``Agent.woken_by_changes``). One watch stream per
worker, not per agent: the machine's two cores would not carry 500 Python streams.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from clusterctl.errors import ClusterctlError
from clusterctl.paths import ETCD_PACKAGE, find_tool
from clusterctl.reporter import Reporter

GROUP = "bench"
READS = ("direct", "watch")
DEFAULT_WINDOW = 30.0
DEFAULT_WARMUP = 5.0
DEFAULT_WORKERS = 4
# The agent's etcd role (roles/etcd/defaults/main.yml: etcd_heartbeat_interval_ms,
# etcd_election_timeout_ms; etcd.default.j2: pre-vote); tests/unit/test_bench_scale.py
# checks they still agree.
HEARTBEAT_MS = 20
ELECTION_MS = 200
# ha.Agent._fence's sentence: "<reason>, fencing: stopped <groups>"
FENCE_MARK = ", fencing: stopped"
# Kinds of requests in the table, in etcd's gRPC method names (the JSON gateway turns every
# HTTP call into one gRPC call inside the member); the rest is summed as "other".
TABLE_KINDS = ("Range", "Txn", "Put", "LeaseKeepAlive", "LeaseGrant", "Watch")
# Bounds of every wait (seconds): nothing here waits for ever.
ETCD_READY_TIMEOUT = 20.0
HOLDER_TIMEOUT = 20.0
FAILOVER_TIMEOUT = 15.0
REPORT_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
# agents started per second, over all workers: 500 agents started in one second (each a
# grant, a member key, a first read, and a renewal that first asks every member's status)
# starved the machine's two cores, renewals timed out and leases lapsed in a spiral; nodes of
# a real cluster do not all boot in the same second either
AGENT_START_RATE = 50.0

log = logging.getLogger(__name__)


class BenchError(ClusterctlError):
    """The benchmark could not go on (one line for the CLI)."""


# -- pure parts: /metrics, percentiles, the table ---------------------------------------------

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of metric ``name`` in a Prometheus text exposition."""
    samples = []
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        samples.append((labels, value))
    return samples


def counter_by(text: str, name: str, label: str) -> dict[str, float]:
    """Metric ``name`` summed by the value of ``label`` (samples without it are left out)."""
    sums: dict[str, float] = {}
    for labels, value in parse_samples(text, name):
        if label in labels:
            sums[labels[label]] = sums.get(labels[label], 0.0) + value
    return sums


def request_counts(text: str) -> dict[str, float]:
    """Requests by gRPC method in one member's ``/metrics``: calls handled
    (``grpc_server_handled_total``, every code), except ``Watch``, counted as streams opened
    (``grpc_server_started_total``: a watch stream is handled only when it ends), with the
    messages sent on watch streams (events, progress notifications) as ``WatchMessages``."""
    counts = counter_by(text, "grpc_server_handled_total", "grpc_method")
    started = counter_by(text, "grpc_server_started_total", "grpc_method")
    counts.pop("Watch", None)
    if "Watch" in started:
        counts["Watch"] = started["Watch"]
    sent = counter_by(text, "grpc_server_msg_sent_total", "grpc_method")
    if "Watch" in sent:
        counts["WatchMessages"] = sent["Watch"]
    return counts


def request_rates(before: Sequence[str], after: Sequence[str], seconds: float) -> dict[str, float]:
    """Requests per second by kind over a window, summed over the members: ``before`` and
    ``after`` are the members' ``/metrics`` texts at its start and end, in the same order.
    ``total`` sums every kind but ``WatchMessages`` (messages, not requests)."""
    if len(before) != len(after):
        raise ValueError("one /metrics text per member at both ends of the window")
    deltas: dict[str, float] = {}
    for start, end in zip(before, after, strict=True):
        first, last = request_counts(start), request_counts(end)
        for kind, value in last.items():
            deltas[kind] = deltas.get(kind, 0.0) + max(0.0, value - first.get(kind, 0.0))
    rates = {kind: round(d / seconds, 1) for kind, d in sorted(deltas.items()) if d > 0}
    rates["total"] = round(sum(d for k, d in deltas.items() if k != "WatchMessages") / seconds, 1)
    return rates


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated linearly between the two
    nearest ranks (numpy's default); ``nan`` for no values."""
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p99 and max of latencies given in seconds, in milliseconds (None: none)."""
    if not seconds:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "count": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 1),
        "p99_ms": round(percentile(seconds, 99) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: Iterable[dict[str, Any]]) -> str:
    """The Markdown table: one row per N (a run that broke says where)."""
    kinds = " | ".join(TABLE_KINDS)
    lines = [
        f"| agents | etcd CPU (cores) | etcd RSS (MB) | requests/s | {kinds} | other "
        "| renewal p50 / p99 (ms) | renewal failures | fencings | failover (s) "
        "| agent CPU (cores) | steps/s per agent |",
        "|---" * (11 + len(TABLE_KINDS)) + "|",
    ]
    for r in rows:
        if r.get("error"):
            blank = " | ".join(["-"] * (9 + len(TABLE_KINDS)))
            lines.append(f"| {r['agents']} | {blank} | broke: {r['error']} |")
            continue
        rates = r["requests_per_s"]
        shown = [rates.get(k, 0.0) for k in TABLE_KINDS]
        other = rates["total"] - sum(rates.get(k, 0.0) for k in TABLE_KINDS)
        renewal = r["renewal"]
        failover = r["failover_s"]
        failed_over = f"none in {FAILOVER_TIMEOUT:.0f} s" if failover is None else f"{failover:.2f}"
        lines.append(
            f"| {r['agents']} | {r['etcd_cores']:.2f} | {r['etcd_rss_mb']:.0f} | "
            f"{rates['total']:.0f} | "
            + " | ".join(f"{v:.0f}" for v in shown)
            + f" | {max(0.0, other):.0f} | "
            f"{_number(renewal['p50_ms'])} / {_number(renewal['p99_ms'])} | "
            f"{r['renewal_failures']} | {r['fencings']} | "
            f"{failed_over} | {r['agent_cores']:.2f} | {r['agent_steps_per_s']:.1f} |"
        )
    return "\n".join(lines)


# -- processes: CPU, memory, ports ---------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far; 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15: utime, stime


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nobody listens on (bound together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL when the bench dies (prctl PR_SET_PDEATHSIG), so a
    killed bench leaves no etcd behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _http_get(url: str, timeout: float) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return response.read()


# -- etcd ---------------------------------------------------------------------------------------


@dataclass
class EtcdCluster:
    """Three etcd members on loopback, in a temporary directory; ``stop`` kills them by pid
    and removes the directory. Flags as the agent's etcd role sets them, plus progress
    notifications every second for watchers."""

    binary: str
    reporter: Reporter
    members: int = 3
    endpoints: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    directory: str = ""
    version: str = ""

    def start(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="clusterctl-bench-scale-")
        ports = free_ports(2 * self.members)
        names = [f"m{i + 1}" for i in range(self.members)]
        peers = {n: f"http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names)}
        initial = ",".join(f"{n}={url}" for n, url in peers.items())
        self.version = self._version()
        for i, name in enumerate(names):
            client = f"http://127.0.0.1:{ports[2 * i]}"
            argv = [
                self.binary,
                f"--name={name}",
                f"--data-dir={self.directory}/{name}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peers[name]}",
                f"--initial-advertise-peer-urls={peers[name]}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                "--initial-cluster-token=clusterctl-bench-scale",
                f"--heartbeat-interval={HEARTBEAT_MS}",
                f"--election-timeout={ELECTION_MS}",
                "--pre-vote=true",
                "--experimental-watch-progress-notify-interval=1s",
            ]
            with open(f"{self.directory}/{name}.log", "wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        argv,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,  # the terminal's Ctrl-C is the bench's to handle
                        preexec_fn=_die_with_parent,
                    )
                )
            self.endpoints.append(client)
        started = time.monotonic()
        deadline = started + ETCD_READY_TIMEOUT
        while not all(self._healthy(url) for url in self.endpoints):
            self.check()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"etcd did not become healthy in {ETCD_READY_TIMEOUT:.0f} s",
                    f"see {self.directory}/*.log",
                )
            time.sleep(0.1)
        self.reporter.info(
            f"etcd {self.version}: {self.members} members on "
            f"{', '.join(self.endpoints)} (pids {', '.join(str(p) for p in self.pids)}), "
            f"healthy in {time.monotonic() - started:.1f} s"
        )

    def _version(self) -> str:
        try:
            done = subprocess.run(
                [self.binary, "--version"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        first = done.stdout.splitlines()[0] if done.stdout else ""
        return first.rsplit(" ", 1)[-1] if first else "?"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            return b'"health":"true"' in _http_get(url + "/health", 0.5)
        except OSError:
            return False

    def check(self) -> None:
        """Raise if a member exited."""
        for proc, url in zip(self.procs, self.endpoints, strict=False):
            if proc.poll() is not None:
                raise BenchError(
                    f"the etcd member at {url} exited (code {proc.returncode})",
                    f"see {self.directory}/*.log",
                )

    def metrics(self) -> list[str]:
        """Every member's ``/metrics`` text, in endpoint order."""
        try:
            return [_http_get(url + "/metrics", 5.0).decode() for url in self.endpoints]
        except OSError as exc:
            raise BenchError(f"etcd's /metrics did not answer: {exc}") from None

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def rss_mb(self) -> list[float]:
        return [rss_mb(pid) for pid in self.pids]

    def stop(self) -> None:
        """Kill exactly the members started here (by pid), wait for them, remove the data."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.procs = []
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""


# -- the agents' side (runs in the worker processes) ------------------------------------------


class NullRunner:
    """A node where every command succeeds and nothing happens: units started here are
    remembered, so the monitor (``systemctl is-active``) sees them running."""

    def __init__(self) -> None:
        self.units: set[str] = set()

    def run(self, argv: Sequence[str], timeout: float, stdin: str | None = None) -> Any:
        from clusterctl.agent.resources.runner import CommandResult

        match list(argv):
            case ["systemctl", "start", unit]:
                self.units.add(unit)
            case ["systemctl", "stop", unit] | ["systemctl", "kill", _, unit]:
                self.units.discard(unit)
            case ["systemctl", "is-active", "--quiet", unit]:
                return CommandResult(0 if unit in self.units else 3)
        return CommandResult(0)

    def set_address(self, interface: str, cidr: str, lifetime: int | None, timeout: float) -> Any:
        from clusterctl.agent.resources.runner import CommandResult

        return CommandResult(0)

    def address_owner(self, interface: str, address: str) -> str | None:
        return None


def bench_config(node: str, cluster: str, endpoints: Sequence[str]) -> Any:
    """The agent's real configuration with its default timings (lease_ttl 1 s, ...): one
    group every node may hold, one resource that touches nothing (``NullRunner``), no API."""
    from clusterctl.agent.config import AgentConfig, GroupSpec, ResourceSpec

    group = GroupSpec(
        name=GROUP,
        resources=(ResourceSpec("service", "systemd", {"unit": "clusterctl-bench.service"}),),
    )
    return AgentConfig(
        node=node,
        etcd_endpoints=tuple(endpoints),
        cluster=cluster,
        groups=(group,),
        api_port=0,
    ).validate()


@dataclass(frozen=True)
class WatchedState:
    """What ``make_state_reader`` gives a worker in watch mode: the worker's one mirror of
    the cluster's state keys, and how an agent gets its reader of it (``reader_for(store)``,
    ``store`` being the agent's own client, for the reads the mirror cannot serve), passed
    as ``Agent(state_reader=...)``."""

    mirror: Any
    reader_for: Callable[[Any], Any]


def make_state_reader(mode: str, store: Any, keys: Any) -> WatchedState | None:
    """The hook where watched reads plug in, called once per worker process with a store
    client of its own: None for ``direct`` (each agent reads the keyspace itself, as today);
    for ``watch``, one ``KeyspaceMirror`` of the cluster's state keys, started (the worker
    adds a listener that wakes its agents)."""
    if mode == "direct":
        return None
    from clusterctl.agent.statereader import MirrorReader
    from clusterctl.agent.store.watch import KeyspaceMirror

    mirror = KeyspaceMirror(store, keys.root, keys.state_end)
    mirror.start()
    return WatchedState(mirror, lambda own: MirrorReader(own, mirror, time.monotonic))


def check_reads(mode: str) -> None:
    """Fail at once (one line) when ``mode`` cannot run here."""
    if mode not in READS:
        raise BenchError(f"unknown reads mode {mode!r}", f"one of {', '.join(READS)}")


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    cluster: str
    nodes: tuple[str, ...]
    endpoints: tuple[str, ...]
    reads: str
    start_stagger: float  # seconds between two of its agents' starts


class Recorder:
    """What a worker's agents did, with times (``time.monotonic``), for the window's report."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.renewals: list[tuple[float, float]] = []  # (when, latency in seconds)
        self.renew_failures: list[float] = []
        self.fencings: list[tuple[float, str, str]] = []  # (when, node, sentence)
        self.steps: list[float] = []
        self.errors: list[tuple[float, str, str]] = []  # (when, node, exception)

    def renewed(self, latency: float) -> None:
        with self.lock:
            self.renewals.append((time.monotonic(), latency))

    def renew_failed(self) -> None:
        with self.lock:
            self.renew_failures.append(time.monotonic())

    def stepped(self, node: str, sentence: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.steps.append(now)
            if FENCE_MARK in sentence:
                self.fencings.append((now, node, sentence))

    def failed(self, node: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append((time.monotonic(), node, f"{type(exc).__name__}: {exc}"))

    def report(self, start: float, end: float) -> dict[str, Any]:
        def inside(t: float) -> bool:
            return start <= t <= end

        with self.lock:
            return {
                "renewals": [lat for t, lat in self.renewals if inside(t)],
                "renew_failures": sum(1 for t in self.renew_failures if inside(t)),
                "fencings": [f for f in self.fencings if inside(f[0])],
                "fencings_before": [f for f in self.fencings if f[0] < start],
                "steps": sum(1 for t in self.steps if inside(t)),
                "errors": [e for e in self.errors if inside(e[0])][:20],
                "errors_total": len(self.errors),
            }


def _instrument(agent: Any, recorder: Recorder) -> None:
    """Record every renewal's latency and every failed renewal (``Metrics`` keeps buckets
    only): around the agent's own ``MemberLease.renew`` and ``on_renew``."""
    lease = agent.lease
    observe = lease.on_renew
    renew = lease.renew

    def on_renew(seconds: float) -> None:
        if observe is not None:
            observe(seconds)
        recorder.renewed(seconds)

    def counted_renew() -> None:
        try:
            renew()
        except Exception:
            recorder.renew_failed()
            raise

    lease.on_renew = on_renew
    lease.renew = counted_renew


class _Channel:
    """A worker's end of its pipe to the bench, shared by its threads (a pipe of its own per
    worker: a worker killed in the middle of a message cannot wedge the others', as it
    could a queue they all share)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, message: tuple) -> None:
        with self.lock, contextlib.suppress(OSError, ValueError):
            self.conn.send(message)


def _agent_loop(
    agent: Any, wake: threading.Event, stop: threading.Event, recorder: Recorder, bench: _Channel
) -> None:
    """The daemon's loop (agent/daemon.py ``run``) minus systemd; reports the step that
    acquired the group, and shuts the agent down (lease revoked) when stopped."""
    try:
        agent.startup_cleanup()
    except Exception as exc:
        recorder.failed(agent.node, exc)
    held = False
    while not stop.is_set():
        try:
            sentence = agent.step()
        except Exception as exc:  # as the daemon: a bug must not stop the loop
            recorder.failed(agent.node, exc)
        else:
            recorder.stepped(agent.node, sentence)
            holding = bool(agent.holding())
            if holding and not held:
                bench.send(("acquired", agent.node, time.monotonic(), sentence))
            held = holding
        wake.wait(max(0.0, agent.next_wakeup() - agent.clock.now()))
        wake.clear()
    with contextlib.suppress(Exception):
        agent.shutdown()


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """One worker process: its agents, one thread each, until SIGTERM (or the bench dies).
    Sends ("ready", ...) once its agents started, ("acquired", node, when, sentence) when an
    agent's step took the group, and answers ("report", start, end) with its report."""
    from clusterctl.agent.daemon import make_store
    from clusterctl.agent.ha import Agent
    from clusterctl.agent.keys import Keys
    from clusterctl.agent.store.etcd import EtcdStore

    logging.basicConfig(level=logging.CRITICAL)  # the agents' warnings are counted, not shown
    stop = threading.Event()
    wakes: list[threading.Event] = []

    def stopping(*_: Any) -> None:
        stop.set()
        for wake in wakes:
            wake.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops us on Ctrl-C
    parent = os.getppid()
    bench = _Channel(conn)
    recorder = Recorder()
    try:
        state = make_state_reader(
            spec.reads, EtcdStore(spec.endpoints, request_timeout=0.5), Keys(spec.cluster)
        )
    except BenchError as exc:
        bench.send(("error", spec.index, str(exc)))
        return
    agents: list[Any] = []
    if state is not None:

        def on_change(changed: tuple[str, ...] | None) -> None:
            for agent, wake in zip(agents, wakes, strict=True):
                if agent.woken_by(changed):
                    wake.set()

        state.mirror.add_listener(on_change)
    threads = []
    for node in spec.nodes:
        config = bench_config(node, spec.cluster, spec.endpoints)
        store = make_store(config)
        extra = {} if state is None else {"state_reader": state.reader_for(store)}
        agent = Agent(config, store, runner=NullRunner(), **extra)
        # a change wakes its thread (the mirror's listener): a quiet idle agent sleeps until
        # its renewal, or 500 agents' steps alone would starve this 2-core machine
        agent.woken_by_changes = state is not None
        _instrument(agent, recorder)
        wake = threading.Event()
        agents.append(agent)
        wakes.append(wake)
        threads.append(
            threading.Thread(
                target=_agent_loop,
                args=(agent, wake, stop, recorder, bench),
                name=f"agent-{node}",
                daemon=True,
            )
        )
    for thread in threads:
        if stop.is_set():
            break
        thread.start()
        time.sleep(spec.start_stagger)
    bench.send(("ready", spec.index, os.getpid(), len(spec.nodes)))
    while not stop.is_set():
        if os.getppid() != parent:
            break  # the bench died: go too
        try:
            if not conn.poll(0.2):
                continue
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message[0] == "report":
            bench.send(("report", spec.index, recorder.report(message[1], message[2])))
    stopping()
    deadline = time.monotonic() + STOP_TIMEOUT / 2
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if state is not None:
        with contextlib.suppress(Exception):
            state.mirror.stop()


# -- the bench's side -----------------------------------------------------------------------------


@dataclass
class _Worker:
    spec: WorkerSpec
    process: Any
    conn: Connection
    closed: bool = False  # its end of the pipe is gone (it exited)

    @property
    def pid(self) -> int:
        return int(self.process.pid)


class _Run:
    """One N: its workers, the events they send, and the measurements."""

    def __init__(
        self,
        etcd: EtcdCluster,
        cluster: str,
        agents: int,
        reads: str,
        workers: int,
        reporter: Reporter,
    ) -> None:
        from clusterctl.agent.keys import Keys
        from clusterctl.agent.store.etcd import EtcdStore

        self.etcd = etcd
        self.cluster = cluster
        self.n = agents
        self.reads = reads
        self.reporter = reporter
        self.keys = Keys(cluster)
        self.store = EtcdStore(etcd.endpoints, request_timeout=1.0)
        self.nodes = [f"node{i}" for i in range(1, agents + 1)]
        self.worker_count = max(1, min(workers, agents - 1))
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []
        self.ready: set[int] = set()
        self.reports: dict[int, dict[str, Any]] = {}
        self.acquired: list[tuple[str, float, str]] = []

    def say(self, message: str) -> None:
        self.reporter.info(f"N={self.n}: {message}")

    # events

    def _handle(self, event: tuple) -> None:
        kind = event[0]
        if kind == "ready":
            self.ready.add(event[1])
        elif kind == "report":
            self.reports[event[1]] = event[2]
        elif kind == "acquired":
            self.acquired.append((event[1], event[2], event[3]))
        elif kind == "error":
            raise BenchError(event[2])

    def pump(self, seconds: float) -> None:
        """Handle the workers' events for ``seconds`` (at least once)."""
        end = time.monotonic() + seconds
        while True:
            open_ = {w.conn: w for w in self.workers if not w.closed}
            timeout = max(0.0, min(0.1, end - time.monotonic()))
            if not open_:
                time.sleep(timeout)
            for conn in multiprocessing.connection.wait(list(open_), timeout):
                try:
                    event = conn.recv()
                except (EOFError, OSError):
                    open_[conn].closed = True
                    continue
                self._handle(event)
            if time.monotonic() >= end:
                return

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> float:
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > timeout:
                raise BenchError(f"N={self.n}: {what}: not within {timeout:.0f} s")
            self.etcd.check()
            for worker in self.workers:
                if not worker.process.is_alive():
                    raise BenchError(
                        f"N={self.n}: worker {worker.spec.index} exited "
                        f"(code {worker.process.exitcode}) while waiting for {what}"
                    )
            self.pump(0.1)
        return time.monotonic() - started

    # workers

    def start_worker(self, nodes: Sequence[str]) -> _Worker:
        spec = WorkerSpec(
            len(self.workers),
            self.cluster,
            tuple(nodes),
            tuple(self.etcd.endpoints),
            self.reads,
            start_stagger=self.worker_count / AGENT_START_RATE,
        )
        ours, theirs = self.ctx.Pipe()
        process = self.ctx.Process(
            target=worker_main,
            args=(spec, theirs),
            name=f"bench-scale-{self.cluster}-{spec.index}",
            daemon=True,
        )
        process.start()
        theirs.close()
        worker = _Worker(spec, process, ours)
        self.workers.append(worker)
        return worker

    def leader(self) -> str | None:
        from clusterctl.agent.store.base import StoreError

        try:
            return self.store.get(self.keys.leader(GROUP))
        except StoreError:
            return None

    def members(self) -> int:
        from clusterctl.agent.store.base import StoreError

        try:
            return len(self.store.get_prefix(self.keys.members_prefix()))
        except StoreError:
            return -1

    def stop_workers(self) -> None:
        """SIGTERM every worker (each stops its agents: leases revoked), join, then SIGKILL
        whatever is left, by pid."""
        for worker in self.workers:
            if worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers:
            while worker.process.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    self.pump(0.05)  # keep the queue drained while they flush
                worker.process.join(0.05)
            if worker.process.is_alive():
                self.reporter.warn(f"worker {worker.pid} did not stop: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                worker.process.join(5)
            worker.conn.close()

    def cleanup(self) -> None:
        from clusterctl.agent.store.base import StoreError

        try:
            self.stop_workers()
        finally:
            with contextlib.suppress(StoreError):
                self.store.delete_prefix(self.keys.root, timeout=5.0)
            self.store.close()

    # the run

    def measure(self, window: float, warmup: float) -> dict[str, Any]:
        first = self.nodes[0]
        holder_worker = self.start_worker([first])
        took = self.wait_for(
            f"{first} holding {GROUP}", lambda: self.leader() == first, HOLDER_TIMEOUT
        )
        self.say(f"{first} holds {GROUP} ({took:.1f} s after its process started)")
        others = self.nodes[1:]
        for i in range(self.worker_count):
            self.start_worker(others[i :: self.worker_count])
        timeout = 30.0 + 0.1 * self.n
        took = self.wait_for(
            f"{self.n} agents registered",
            lambda: len(self.ready) == len(self.workers) and self.members() >= self.n,
            timeout,
        )
        self.say(
            f"{self.n} agents registered in {len(self.workers)} processes in {took:.1f} s; "
            f"warm-up {warmup:.0f} s"
        )
        self.pump(warmup)
        pids = [w.pid for w in self.workers]
        before = self.etcd.metrics()
        etcd_cpu, agent_cpu = self.etcd.cpu_seconds(), sum(cpu_seconds(p) for p in pids)
        t0 = time.monotonic()
        self.say(f"measuring {window:.0f} s")
        peak = [0.0] * len(self.etcd.pids)
        while time.monotonic() - t0 < window:
            self.etcd.check()
            peak = [max(a, b) for a, b in zip(peak, self.etcd.rss_mb(), strict=True)]
            self.pump(min(1.0, max(0.0, window - (time.monotonic() - t0))))
        after = self.etcd.metrics()
        t1 = time.monotonic()
        etcd_cpu = self.etcd.cpu_seconds() - etcd_cpu
        agent_cpu = sum(cpu_seconds(p) for p in pids) - agent_cpu
        peak = [max(a, b) for a, b in zip(peak, self.etcd.rss_mb(), strict=True)]
        seconds = t1 - t0
        for worker in self.workers:
            worker.conn.send(("report", t0, t1))
        self.wait_for(
            "the workers' reports", lambda: len(self.reports) == len(self.workers), REPORT_TIMEOUT
        )
        reports = list(self.reports.values())
        renewals = [lat for r in reports for lat in r["renewals"]]
        fencings = [f for r in reports for f in r["fencings"]]
        before_window = [f for r in reports for f in r["fencings_before"]]
        steps = sum(r["steps"] for r in reports)
        errors = [e for r in reports for e in r["errors"]]
        acquired_before = list(self.acquired)
        row: dict[str, Any] = {
            "agents": self.n,
            "cluster": self.cluster,
            "worker_processes": len(self.workers),
            "window_s": round(seconds, 2),
            "etcd_cores": round(etcd_cpu / seconds, 3),
            "etcd_rss_mb": round(max(peak), 1),
            "etcd_rss_mb_members": [round(v, 1) for v in peak],
            "requests_per_s": request_rates(before, after, seconds),
            "renewal": latency_summary(renewals),
            "renewal_failures": sum(r["renew_failures"] for r in reports),
            "fencings": len(fencings),
            "fencings_in_warmup": len(before_window),
            "fencing_sentences": [f"{node}: {s}" for _, node, s in (fencings + before_window)][:10],
            "acquisitions_before_kill": len(acquired_before),
            "agent_cores": round(agent_cpu / seconds, 3),
            "agent_steps_per_s": round(steps / seconds / self.n, 2),
            "step_errors": len(errors),
            "step_error_samples": [f"{node}: {text}" for _, node, text in errors[:5]],
        }
        row.update(self.failover(holder_worker))
        return row

    def failover(self, holder_worker: _Worker) -> dict[str, Any]:
        """SIGKILL the holder's process; seconds until another agent's step acquired it."""
        holder = None
        deadline = time.monotonic() + 5.0
        while holder is None and time.monotonic() < deadline:
            holder = self.leader()
            if holder is None:
                self.pump(0.05)
        if holder is None:
            raise BenchError(f"N={self.n}: nobody holds {GROUP} before the kill")
        victim = next(w for w in self.workers if holder in w.spec.nodes)
        if victim is not holder_worker:
            self.say(
                f"{GROUP} moved to {holder} during the run: killing its process "
                f"({len(victim.spec.nodes)} agents)"
            )
        self.acquired.clear()
        killed = {"failover_agents_killed": len(victim.spec.nodes)}
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        victim.process.join(5)
        found: tuple[str, float, str] | None = None
        while time.monotonic() - killed_at < FAILOVER_TIMEOUT:
            self.pump(0.05)
            after = [a for a in self.acquired if a[1] > killed_at and a[0] != holder]
            if after:
                found = min(after, key=lambda a: a[1])
                break
        if found is None:
            self.say(f"killed {holder}'s process: no agent acquired {GROUP} in 15 s")
            return {"failover_s": None, "failover_from": holder, "failover_to": None, **killed}
        seconds = found[1] - killed_at
        self.say(f"killed {holder}'s process: {found[0]} acquired {GROUP} after {seconds:.2f} s")
        return {
            "failover_s": round(seconds, 3),
            "failover_from": holder,
            "failover_to": found[0],
            **killed,
        }


def find_etcd() -> str:
    found = find_tool(*ETCD_PACKAGE)
    if found is None:
        raise BenchError("etcd is missing", "run `make deps` (it unpacks etcd-server)")
    return found


def run(
    agent_counts: Sequence[int],
    window: float,
    reads: str,
    reporter: Reporter,
    workers: int = DEFAULT_WORKERS,
    warmup: float = DEFAULT_WARMUP,
) -> dict[str, Any]:
    """Every N in turn on one 3-member etcd; returns the result (``rows``: one per N). A run
    that breaks (agents not registered in time, ...) is a row saying so; the next N runs."""
    check_reads(reads)
    if not agent_counts or any(n < 2 for n in agent_counts):
        raise BenchError("--agents must be at least 2", "the failover needs a second agent")
    if window <= 0 or warmup < 0 or workers < 1:
        raise BenchError("--window must be > 0, the warm-up >= 0 and --workers >= 1")
    etcd = EtcdCluster(find_etcd(), reporter)
    rows = []
    try:
        etcd.start()
        for index, n in enumerate(agent_counts, start=1):
            bench = _Run(etcd, f"scale{index}-{n}", n, reads, workers, reporter)
            try:
                row = bench.measure(window, warmup)
            except BenchError as exc:
                etcd.check()  # a dead etcd ends the whole bench
                reporter.warn(str(exc))
                row = {"agents": n, "cluster": bench.cluster, "error": str(exc)}
            finally:
                bench.cleanup()
            rows.append(row)
            if not row.get("error"):
                rates = row["requests_per_s"]
                bench.say(
                    f"etcd {row['etcd_cores']:.2f} cores, {rates['total']:.0f} requests/s, "
                    f"renewal p99 {_number(row['renewal']['p99_ms'])} ms, "
                    f"{row['fencings']} fencings, agents {row['agent_cores']:.2f} cores"
                )
    finally:
        etcd.stop()
    return {
        "benchmark": "scale",
        "reads": reads,
        "window_s": window,
        "warmup_s": warmup,
        "workers": workers,
        "cpus": os.cpu_count(),
        "etcd": {
            "version": etcd.version,
            "members": 3,
            "heartbeat_ms": HEARTBEAT_MS,
            "election_ms": ELECTION_MS,
            "watch_progress_notify_s": 1,
        },
        "rows": rows,
    }
