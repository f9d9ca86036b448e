"""Helpers of the HA integration tests: who holds the VIP, an HTTP prober, faults, healing.

Everything here observes the real nodes from the host: addresses through `podman exec`, the
web service through the VIP, the agents through their REST API. A node that cannot be asked
(paused, killed) is *unknown*, never counted as a holder.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from clusterctl.agent.store.etcd import EtcdCredentials, EtcdStore
from clusterctl.agent.tls import TlsFiles
from clusterctl.bench import sandbox as kernel_view
from clusterctl.faults import PARTITION_NFT, PARTITION_TABLE
from clusterctl.providers.podman_cli import Podman
from clusterctl.state import StateDir, read_token

from .conftest import STATE_ROOT, Sandbox, cli, podman

T = TypeVar("T")

# A partition as docs/machine-notes.md describes it: a node cut off from inside, addresses kept.

# Hosts are reached directly, never through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ha-exec")


def wait_for(
    predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = ""
) -> T:
    """Call ``predicate`` until it returns something truthy (returned); AssertionError after
    ``timeout`` seconds, with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what or predicate}: {last!r}"
            )
        time.sleep(interval)


# -- nodes -------------------------------------------------------------------------------------


def node_names(sandbox: Sandbox) -> list[str]:
    return [n["name"] for n in sandbox.nodes]


def node_address(sandbox: Sandbox, node: str) -> str:
    return next(n["address"] for n in sandbox.nodes if n["name"] == node)


def container(sandbox: Sandbox, node: str) -> str:
    return f"{sandbox.cluster}-{node}"


def vip(sandbox: Sandbox) -> str:
    return sandbox.info["vip"]


def node_exec(sandbox: Sandbox, node: str, *cmd: str, timeout: float = 10) -> tuple[int, str]:
    """(rc, stdout) of a command inside ``node``; rc 125+ when podman could not run it (a
    paused or stopped container)."""
    proc = podman("exec", container(sandbox, node), *cmd, check=False)
    return proc.returncode, proc.stdout


def container_state(sandbox: Sandbox, node: str) -> str:
    """podman's state of the node's container: running, paused, exited, ..."""
    proc = podman("inspect", "--format", "{{.State.Status}}", container(sandbox, node), check=False)
    return proc.stdout.strip() or "missing"


def node_has_vip(sandbox: Sandbox, node: str) -> bool | None:
    """Whether eth0 of ``node`` carries the VIP; None when the node cannot be asked."""
    rc, out = node_exec(sandbox, node, "ip", "-br", "-4", "addr", "show", "eth0")
    if rc != 0:
        return None
    return f" {vip(sandbox)}/" in f" {out} "


def vip_holders(sandbox: Sandbox) -> list[str]:
    """Nodes whose eth0 has the VIP now (asked in parallel); unknown nodes are not holders."""
    names = node_names(sandbox)
    found = list(_POOL.map(lambda n: node_has_vip(sandbox, n), names))
    return [n for n, has in zip(names, found, strict=True) if has]


def unit_active(sandbox: Sandbox, node: str, unit: str) -> bool | None:
    rc, out = node_exec(sandbox, node, "systemctl", "is-active", unit)
    if rc >= 125:
        return None
    return out.strip() == "active"


@contextmanager
def kernel_holders(sandbox: Sandbox) -> Iterator[kernel_view.HolderSampler]:
    """Samples which nodes' kernels have the VIP every 20 ms, from the host through each
    node's network namespace: unlike ``HolderSampler`` it sees a paused node, whose kernel
    still serves the VIP and answers ARP for it until its lifetime runs out."""
    record = StateDir(sandbox.cluster, STATE_ROOT).load()
    pids = kernel_view.node_pids(Podman(STATE_ROOT), record)
    sampler = kernel_view.HolderSampler(pids, vip(sandbox), period=0.02).start()
    try:
        yield sampler
    finally:
        sampler.stop()


class HolderSampler:
    """Samples every node's eth0 about every 50 ms, from inside the node: one `podman exec`
    per node runs a bounded shell loop that prints a timestamp (taken before `ip` runs, so a
    sample is never older than its time says) and the addresses. A paused or killed node
    yields no samples, so it counts as unknown, never as a holder.

    A node that restarts is sampled again as soon as `podman exec` works on it again.

    ``doubles()`` lists the moments when two nodes' latest samples (each at most ``fresh`` s
    old) both show the VIP: conservative, since a node keeps its last state until its next
    sample."""

    LOOP = (
        'end=$(( $(date +%s) + {limit} )); while [ "$(date +%s)" -lt "$end" ]; do '
        'echo "$(date +%s.%N) $(ip -br -4 addr show eth0)"; sleep {interval}; done'
    )

    def __init__(
        self, sandbox: Sandbox, interval: float = 0.05, limit: int = 90, fresh: float = 0.3
    ) -> None:
        self.sandbox = sandbox
        self.address = vip(sandbox)
        self.fresh = fresh
        self.cmd = self.LOOP.format(limit=limit, interval=interval)
        self.samples: dict[str, list[tuple[float, bool]]] = {n: [] for n in node_names(sandbox)}
        self.limit = limit
        self._procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> HolderSampler:
        for node in self.samples:
            thread = threading.Thread(target=self._sample, args=(node,), daemon=True)
            thread.start()
            self._threads.append(thread)
        # wait for the first sample of every node that can answer
        wait_for(
            lambda: all(
                self.samples[n] or container_state(self.sandbox, n) != "running"
                for n in self.samples
            ),
            15, 0.05, "the first address samples",
        )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            proc.kill()
        for thread in self._threads:
            thread.join(timeout=15)

    def _sample(self, node: str) -> None:
        """Run the sampling loop on ``node``, and again whenever it ends early (the node
        was killed or restarted), until the sampler closes or ``limit`` s have passed."""
        env = dict(os.environ, CONTAINERS_CONF=str(STATE_ROOT / "containers.conf"))
        end = time.monotonic() + self.limit
        while not self._closed.is_set() and time.monotonic() < end:
            with self._lock:
                if self._closed.is_set():
                    return
                proc = self._procs[node] = subprocess.Popen(
                    ["podman", "exec", container(self.sandbox, node), "sh", "-c", self.cmd],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                    text=True, env=env,
                )  # fmt: skip
            assert proc.stdout is not None
            for line in proc.stdout:
                stamp, _, addrs = line.partition(" ")
                try:
                    at = float(stamp)
                except ValueError:
                    continue
                self.samples[node].append((at, self.holds(addrs)))
            proc.wait(timeout=10)
            self._closed.wait(0.2)

    def holds(self, sample: str) -> bool:
        """Whether one sample's output shows the node holding what is sampled."""
        return f" {self.address}/" in f" {sample} "

    def state_at(self, node: str, at: float) -> bool | None:
        """The node's last sampled state at ``at`` (None: no sample in the last ``fresh`` s)."""
        last = None
        for t, has in self.samples[node]:
            if t > at:
                break
            last = (t, has)
        if last is None or at - last[0] > self.fresh:
            return None
        return last[1]

    def holders_at(self, at: float) -> list[str]:
        return [n for n in self.samples if self.state_at(n, at)]

    def doubles(self, since: float = 0.0) -> list[tuple[float, list[str]]]:
        times = sorted(t for s in self.samples.values() for t, _ in s if t >= since)
        return [(t, hs) for t in times if len(hs := self.holders_at(t)) > 1]

    def holders_seen(self, since: float = 0.0) -> set[str]:
        return {n for n, s in self.samples.items() if any(h and t >= since for t, h in s)}

    def last_seen_holding(self, node: str) -> float | None:
        held = [t for t, h in self.samples[node] if h]
        return held[-1] if held else None


# -- the cluster's trust: the controller's certificate, etcd as root --------------------------


def controller_tls(sandbox: Sandbox) -> TlsFiles:
    """The cluster's CA and the controller's client certificate (state dir, pki/)."""
    pki = sandbox.state_dir / "pki"
    return TlsFiles(str(pki / "ca.crt"), str(pki / "controller.crt"), str(pki / "controller.key"))


def tls_opener(sandbox: Sandbox) -> urllib.request.OpenerDirector:
    """urllib without proxies, over TLS as the controller (server verified by the CA)."""
    context = controller_tls(sandbox).client_context()
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )


def etcd_store(
    sandbox: Sandbox, addresses: list[str] | None = None, request_timeout: float = 0.5
) -> EtcdStore:
    """A client of the cluster's etcd as its root user, from the controller: the tests read
    and write what an operator (or an attacker with root's password) could."""
    addresses = addresses or [n["address"] for n in sandbox.nodes[:3]]
    return EtcdStore(
        [f"https://{a}:2379" for a in addresses],
        request_timeout=request_timeout,
        tls=controller_tls(sandbox),
        credentials=EtcdCredentials("root", str(sandbox.state_dir / "etcd-root-password")),
    )


def etcd_post(sandbox: Sandbox, address: str, path: str, body: dict, timeout: float = 2.0) -> dict:
    """One call of etcd's gateway on one member, with the controller's certificate and no
    token (health, status and member list need none)."""
    req = urllib.request.Request(
        f"https://{address}:2379{path}", data=json.dumps(body).encode(), method="POST"
    )
    with tls_opener(sandbox).open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


# -- the agents' API -----------------------------------------------------------------------------


def api_token(sandbox: Sandbox) -> str:
    return read_token(sandbox.state_dir / "api-token")


def api_get(
    sandbox: Sandbox,
    node: str,
    path: str,
    token: str | None = "",
    timeout: float = 2.0,
    body: dict | None = None,
) -> tuple[int, bytes]:
    """(HTTP status, body) of GET https://NODE:7480/PATH (POST of ``body`` as JSON if given)
    with the controller's certificate; token "" = the cluster's, None = none. Status 0 when
    the node did not answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"https://{node_address(sandbox, node)}:7480{path}", data=data)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token or api_token(sandbox)}")
    try:
        with tls_opener(sandbox).open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def api_status(sandbox: Sandbox, nodes: list[str] | None = None) -> dict | None:
    """The first answer of /v1/status from ``nodes`` (default all) that has quorum."""
    for node in nodes or node_names(sandbox):
        code, body = api_get(sandbox, node, "/v1/status", timeout=1.5)
        if code == 200:
            return json.loads(body)
    return None


def named_group(status: dict | None, name: str) -> dict:
    """Group ``name`` as an agent's status reports it ({} if absent or no status)."""
    return next((g for g in (status or {}).get("groups", []) if g["name"] == name), {})


def web_group(status: dict | None) -> dict:
    return named_group(status, "web")


def group_of(sandbox: Sandbox, name: str) -> dict:
    """Group ``name`` as the agents report it now ({} if none answers)."""
    return named_group(api_status(sandbox), name)


def started_on(sandbox: Sandbox, name: str) -> str | None:
    """The node that runs group ``name`` (started), or None."""
    g = group_of(sandbox, name)
    return g.get("node") if g.get("state") == "started" else None


def group_history(sandbox: Sandbox, name: str) -> list[dict]:
    """`clusterctl history --group name --json` ([] if it fails)."""
    result = cli("history", "--cluster", sandbox.cluster, "--group", name, "--json")
    return json.loads(result.stdout) if result.rc == 0 else []


def holder(sandbox: Sandbox, nodes: list[str] | None = None) -> str | None:
    """The node the agents (of ``nodes``, default all) say runs web (started), or None."""
    g = web_group(api_status(sandbox, nodes))
    return g.get("node") if g.get("state") == "started" else None


def cli_status(sandbox: Sandbox) -> dict:
    result = cli("status", "--cluster", sandbox.cluster, "--json", timeout=60)
    assert result.rc == 0, result.stderr[-2000:]
    return result.json()


# -- the prober ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    sent: float
    done: float
    node: str | None  # the first line of the page: the node that answered; None = failed
    error: str = ""


class Ticker:
    """Calls ``tick()`` every ``period`` s in a thread of its own (ticks may hand work to
    ``self._pool``), from the start of a ``with`` block to its end, or ``limit`` s at most."""

    def __init__(self, period: float, workers: int, limit: float = 600) -> None:
        self.period = period
        self.limit = limit
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ticker")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        tick = time.monotonic()
        end = tick + self.limit
        while not self._stop.is_set() and time.monotonic() < end:
            self.tick()
            tick += self.period
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def tick(self) -> None:
        raise NotImplementedError


class Prober(Ticker):
    """From the host, start a GET http://VIP/ every ``period`` s (each in a worker thread,
    ``timeout`` s each) and record who answered."""

    def __init__(self, address: str, period: float = 0.02, timeout: float = 0.2) -> None:
        super().__init__(period, workers=32)
        self.url = f"http://{address}/"
        self.timeout = timeout
        self.probes: list[Probe] = []
        self._lock = threading.Lock()

    def tick(self) -> None:
        self._pool.submit(self._probe)

    def _probe(self) -> None:
        sent = time.monotonic()
        node, error = None, ""
        try:
            with _OPENER.open(self.url, timeout=self.timeout) as resp:
                first = resp.read().decode(errors="replace").splitlines()
                node = first[0].strip() if first and resp.status == 200 else None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = str(getattr(exc, "reason", exc))
        with self._lock:
            self.probes.append(Probe(sent, time.monotonic(), node, error))

    def snapshot(self) -> list[Probe]:
        with self._lock:
            return sorted(self.probes, key=lambda p: p.sent)

    def wait_answer(
        self, since: float, timeout: float, node: str | None = None, exclude: str | None = None
    ) -> Probe:
        """The first successful probe sent after ``since`` (from ``node`` if given, not from
        ``exclude``)."""

        def ok(p: Probe) -> bool:
            return bool(p.node) and (node is None or p.node == node) and p.node != exclude

        def found() -> Probe | None:
            return next((p for p in self.snapshot() if p.sent >= since and ok(p)), None)

        return wait_for(found, timeout, 0.05, f"an answer from {node or 'any node'} on {self.url}")

    def outage(self, fault: float, until: float | None = None) -> float:
        """Seconds from the last answer sent before ``fault`` to the first answer sent after
        it (the longest gap between answers from then until ``until``)."""
        probes = [p for p in self.snapshot() if until is None or p.sent <= until]
        ok = [p.sent for p in probes if p.node]
        before = [t for t in ok if t < fault]
        after = [t for t in ok if t >= fault]
        assert before, "no answer before the fault"
        assert after, "no answer after the fault"
        times = [before[-1], *after]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def failures(self, since: float, until: float | None = None) -> int:
        return sum(
            1
            for p in self.snapshot()
            if p.sent >= since and (until is None or p.sent <= until) and p.node is None
        )

    def errors(self, since: float) -> list[tuple[float, str]]:
        return [
            (p.sent - since, p.error) for p in self.snapshot() if p.sent >= since and not p.node
        ]

    def nodes(self, since: float, until: float | None = None) -> list[str]:
        """Nodes that answered, in order, without repeats in a row."""
        out: list[str] = []
        for p in self.snapshot():
            inside = p.sent >= since and (until is None or p.sent <= until)
            if inside and p.node and (not out or out[-1] != p.node):
                out.append(p.node)
        return out


# -- faults and healing --------------------------------------------------------------------------


def partition(sandbox: Sandbox, node: str) -> None:
    podman("exec", "-i", container(sandbox, node), "nft", "-f", "-", stdin=PARTITION_NFT)
    rc, out = node_exec(sandbox, node, "nft", "list", "tables")
    assert f"inet {PARTITION_TABLE}" in out, f"partition of {node} not in place: {out!r}"


def unpartition(sandbox: Sandbox, node: str) -> None:
    """Undo ``partition`` (nothing to undo is fine)."""
    podman("exec", container(sandbox, node), "nft", "delete", "table", "inet", PARTITION_TABLE,
           check=False)  # fmt: skip


def etcd_leader(sandbox: Sandbox, members: list[str] | None = None) -> str | None:
    """The etcd member that is the Raft leader, asked through each member's status."""
    for node in members or node_names(sandbox):
        try:
            data = etcd_post(sandbox, node_address(sandbox, node), "/v3/maintenance/status", {})
        except (OSError, ValueError):
            continue
        if str(data.get("leader")) == str(data.get("header", {}).get("member_id")):
            return node
    return None


def move_etcd_leader(sandbox: Sandbox, to: str) -> None:
    """Make ``to``'s etcd member the Raft leader (etcd's own leadership transfer)."""
    if etcd_leader(sandbox) == to:
        return
    target = etcd_post(sandbox, node_address(sandbox, to), "/v3/maintenance/status", {})
    leader = wait_for(lambda: etcd_leader(sandbox), 10, what="an etcd leader")
    etcd_post(
        sandbox, node_address(sandbox, leader), "/v3/maintenance/transfer-leadership",
        {"targetID": target["header"]["member_id"]},
    )  # fmt: skip
    wait_for(lambda: etcd_leader(sandbox) == to, 10, what=f"etcd leadership on {to}")


def healthy(sandbox: Sandbox) -> str | None:
    """The holder if the cluster is healthy: quorum, all members online, web started, the VIP
    on the holder alone; None otherwise."""
    status = api_status(sandbox)
    if not status or not status.get("quorum"):
        return None
    online = {m["name"] for m in status.get("members", []) if m.get("online")}
    if online != set(node_names(sandbox)):
        return None
    group = web_group(status)
    if group.get("state") != "started" or any(group.get("failcounts", {}).values()):
        return None
    if vip_holders(sandbox) != [group["node"]]:
        return None
    return group["node"]


def bring_back(sandbox: Sandbox, names: list[str], check: bool = True) -> dict[str, str]:
    """Unpause the paused nodes of ``names`` and start the stopped ones (killed or fenced:
    they rejoin by themselves, as after a reboot). Returns each node's state before."""
    states = {n: container_state(sandbox, n) for n in names}
    for n, state in states.items():
        if state == "paused":
            podman("unpause", container(sandbox, n), check=False)
        elif state != "running":
            podman("start", container(sandbox, n), check=check)
    return states


def heal(sandbox: Sandbox, timeout: float = 120) -> str:
    """Bring every node back and the cluster to health; returns the holder.

    Unpause paused nodes, start killed ones (they rejoin by themselves), delete the
    partition table, start etcd and the agent, reset fail counts."""
    names = node_names(sandbox)
    bring_back(sandbox, names)
    for n in names:
        unpartition(sandbox, n)
    for n in names:
        node_exec(sandbox, n, "systemctl", "reset-failed", "etcd", "clusterctl-agent")
        node_exec(sandbox, n, "systemctl", "start", "--no-block", "etcd", "clusterctl-agent")

    def settled() -> str | None:
        status = api_status(sandbox)
        if not status or not status.get("quorum"):
            return None
        if any(web_group(status).get("failcounts", {}).values()):
            cli("cleanup", "web", "--cluster", sandbox.cluster, timeout=60)
        return healthy(sandbox)

    return wait_for(settled, timeout, 0.5, "a healthy cluster")
