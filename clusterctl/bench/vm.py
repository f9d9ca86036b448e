"""`clusterctl bench vm`: the vm profile's figures, on a sandbox of its own.

- **Crash failover**: `podman kill` of the node running the guest, to the guest answering on
  the VIP again from another node (a new boot id: it booted there, after the old node was
  fenced).
- **Live move**: `clusterctl failover vm --to <other>` while a client pings the VIP every
  10 ms (the guest answers: the node routes the VIP to it) and asks the guest's HTTP service
  through the VIP every 100 ms (each attempt given 0.3 s, retried until a second has passed):
  qemu's own total time and downtime (the history's ``migrated`` entry), the longest the pings
  went unanswered (the pause a client saw), the longest any HTTP request waited (a request
  caught in the pause waits for its retry), requests that failed, and the command's time.
  The guest's boot id must not change.
- **Guest boot**: one boot of the demo guest inside a node, from qemu's start to the guest's
  "ready" line, with the accelerator the vm role chose (KVM or TCG).
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from clusterctl import cluster as api
from clusterctl.bench.pinger import Pinger
from clusterctl.bench.sandbox import SandboxBench, wait_until
from clusterctl.faults import Injected
from clusterctl.profiles import VM_PORT, VM_STATUS_PATH
from clusterctl.reporter import ListReporter, Reporter
from clusterctl.state import ClusterRecord

GROUP = "vm"
ATTEMPT = 0.3  # seconds one request may take before the client tries again
PATIENCE = 1.0  # seconds a client keeps retrying one request
CLIENT_PERIOD = 0.1  # seconds between the client's requests (the guest answers in ~30 ms)
GUEST_DIR = "/usr/local/lib/clusterctl/guest"
MIGRATED_RE = re.compile(r"live: (\d+) ms, paused (\d+) ms")


def ask_guest(address: str, timeout: float, errors: list[str] | None = None) -> dict | None:
    """The demo guest's answer through ``address`` (boot_id, uptime, boots), or None (and
    why, appended to ``errors``)."""
    url = f"http://{address}:{VM_PORT}{VM_STATUS_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310
            return json.loads(reply.read())
    except (OSError, urllib.error.URLError, ValueError) as exc:
        if errors is not None:
            errors.append(str(getattr(exc, "reason", exc))[:60])
        return None


@dataclass(frozen=True)
class Request:
    sent: float  # monotonic
    took: float  # seconds to the answer, retries included
    answer: dict | None
    errors: tuple[str, ...]  # each failed attempt's reason


class GuestClient:
    """Asks the guest through ``address`` every ``CLIENT_PERIOD`` s, each request in a thread
    of its own, each attempt given ``ATTEMPT`` s and retried until answered or ``PATIENCE``
    s have passed, from the start of a ``with`` block to its end (at most ``limit`` s)."""

    def __init__(self, address: str, limit: float = 120.0) -> None:
        self.address = address
        self.limit = limit
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="guest-client")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GuestClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        end = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < end:
            self._pool.submit(self._ask)
            self._stop.wait(CLIENT_PERIOD)

    def _ask(self) -> None:
        sent = time.monotonic()
        errors: list[str] = []
        answer = ask_guest(self.address, ATTEMPT, errors)
        while answer is None and time.monotonic() - sent < PATIENCE:
            time.sleep(0.05)
            left = PATIENCE - (time.monotonic() - sent)
            answer = ask_guest(self.address, max(0.05, min(ATTEMPT, left)), errors)
        with self._lock:
            self.requests.append(Request(sent, time.monotonic() - sent, answer, tuple(errors)))

    def snapshot(self) -> list[Request]:
        with self._lock:
            return sorted(self.requests, key=lambda r: r.sent)

    def failed(self) -> list[Request]:
        return [r for r in self.snapshot() if r.answer is None]

    def longest_wait(self) -> float:
        """The longest a request waited for its answer: what a client saw of a pause."""
        return max((r.took for r in self.snapshot() if r.answer), default=0.0)

    def boot_ids(self) -> list[str]:
        """The guest's boot ids in the order the answers came, without repeats in a row."""
        ids: list[str] = []
        for r in self.snapshot():
            if r.answer and (not ids or ids[-1] != r.answer["boot_id"]):
                ids.append(r.answer["boot_id"])
        return ids


@dataclass(frozen=True)
class CrashTrial:
    victim: str
    new_holder: str
    answered_s: float  # kill -> the guest answering on the VIP from the new holder


@dataclass(frozen=True)
class MoveTrial:
    source: str
    target: str
    command_s: float  # `clusterctl failover` until the group ran on the target
    qemu_total_ms: int | None
    qemu_downtime_ms: int | None
    longest_wait_ms: float  # the longest a client's request waited for its answer
    silence_ms: float  # the longest the guest left pings every 10 ms on the VIP unanswered
    requests: int
    failed: int
    same_boot: bool


class VmBench(SandboxBench):
    kind = "vm"
    wants = "a podman sandbox of profile vm"

    def fits(self, record: ClusterRecord) -> bool:
        return record.provider == "podman" and record.profile == "vm"

    @property
    def vip(self) -> str:
        return str(self.record.vip)

    def holder(self) -> str | None:
        status = api.agent_client(self.state, self.record).status()
        group = next((g for g in status.get("groups", []) if g["name"] == GROUP), {})
        return group.get("node") if group.get("state") == "started" else None

    def ready(self) -> str:
        """Every node online, the guest answering on the VIP; returns the holder."""
        names = {n.name for n in self.record.nodes}

        def settled() -> bool:
            status = api.agent_client(self.state, self.record).status()
            online = {m["name"] for m in status.get("members", []) if m.get("online")}
            return online == names and self.holder() is not None

        wait_until(settled, "every node online and the group vm started", 240)
        wait_until(lambda: ask_guest(self.vip, 1.0) is not None, "the guest answering", 120)
        holder = self.holder()
        assert holder is not None
        return holder

    def crash(self, number: int) -> CrashTrial:
        victim = self.ready()
        before = ask_guest(self.vip, 1.0)
        assert before is not None
        self.reporter.progress(f"crash {number}: killing {victim}")
        killed = time.monotonic()
        self.faults.inject("crash", victim)

        def elsewhere() -> bool:
            answer = ask_guest(self.vip, 0.5)
            return answer is not None and answer["boot_id"] != before["boot_id"]

        wait_until(elsewhere, "the guest answering from another node", 120, poll=0.05)
        answered = time.monotonic() - killed
        new = self.holder() or "?"
        self.faults.heal(Injected("crash", victim))
        return CrashTrial(victim, new, round(answered, 2))

    def move(self, number: int) -> MoveTrial:
        source = self.ready()
        target = next(n.name for n in self.record.nodes if n.name != source)
        before = ask_guest(self.vip, 1.0)
        assert before is not None
        self.reporter.progress(f"live move {number}: {source} -> {target}")
        with Pinger(self.vip) as pinger, GuestClient(self.vip) as client:
            time.sleep(1.0)
            moved = api.failover(self.cluster, GROUP, target, ListReporter(), timeout=120)
            time.sleep(2.0)
        entries = api.agent_client(self.state, self.record).history(limit=20)
        migrated = [e for e in entries.get("entries", []) if e.get("event") == "migrated"]
        found = MIGRATED_RE.search(migrated[-1]["reason"]) if migrated else None
        return MoveTrial(
            source=source,
            target=target,
            command_s=float(moved["seconds"]),
            qemu_total_ms=int(found.group(1)) if found else None,
            qemu_downtime_ms=int(found.group(2)) if found else None,
            longest_wait_ms=round(client.longest_wait() * 1000, 1),
            silence_ms=round(pinger.longest_silence() * 1000, 1),
            requests=len(client.snapshot()),
            failed=len(client.failed()),
            same_boot=client.boot_ids() == [before["boot_id"]],
        )

    def boot(self) -> dict:
        """One boot of the demo guest inside the first node, timed there."""
        node = self.record.nodes[0]
        accel = (
            self.podman.run(
                "exec", node.container, "cat", "/var/lib/clusterctl/vm-accel", check=False
            ).stdout.strip()
            or "tcg"
        )
        script = (
            "import subprocess, time; t = time.monotonic(); "
            "subprocess.run(['qemu-system-x86_64', '-machine', 'pc,accel=" + accel + "', "
            "'-m', '128', '-display', 'none', '-no-reboot', '-serial', 'null', "
            f"'-monitor', 'none', '-kernel', '{GUEST_DIR}/vmlinuz', "
            f"'-initrd', '{GUEST_DIR}/initrd.gz', "
            "'-append', 'console=ttyS0 quiet panic=-1 clusterctl.probe'], timeout=120, "
            "check=True); print(round(time.monotonic() - t, 2))"
        )
        out = self.podman.run("exec", node.container, "python3", "-c", script, timeout=180)
        return {"accel": accel, "boot_s": float(out.stdout.strip().splitlines()[-1])}


def _stats(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def run(cluster: str, trials: int, reporter: Reporter) -> dict:
    bench = VmBench(cluster, reporter)
    boots = [bench.boot() for _ in range(3)]
    moves = [bench.move(i + 1) for i in range(trials)]
    crashes = [bench.crash(i + 1) for i in range(trials)]
    bench.ready()
    downtimes = [float(m.qemu_downtime_ms) for m in moves if m.qemu_downtime_ms is not None]
    totals = [float(m.qemu_total_ms) for m in moves if m.qemu_total_ms is not None]
    return {
        "cluster": cluster,
        "nodes": len(bench.record.nodes),
        "accel": boots[0]["accel"],
        "guest_memory_mib": 128,
        "boot_s": _stats([b["boot_s"] for b in boots]),
        "crash_answered_s": _stats([c.answered_s for c in crashes]),
        "move_command_s": _stats([m.command_s for m in moves]),
        "move_longest_wait_ms": _stats([m.longest_wait_ms for m in moves]),
        "move_silence_ms": _stats([m.silence_ms for m in moves]),
        "move_qemu_total_ms": _stats(totals) if totals else None,
        "move_qemu_downtime_ms": _stats(downtimes) if downtimes else None,
        "move_failed_requests": sum(m.failed for m in moves),
        "move_requests": sum(m.requests for m in moves),
        "move_all_live": all(m.same_boot for m in moves),
        "crash_trials": [asdict(c) for c in crashes],
        "move_trials": [asdict(m) for m in moves],
        "boots": boots,
    }


def table(result: dict) -> str:
    def pair(stats: dict | None, unit: str = "") -> str:
        return "-" if not stats else f"{stats['median']}{unit} / {stats['max']}{unit}"

    rows = [
        f"Virtual machine group on {result['nodes']} sandbox nodes, guest of "
        f"{result['guest_memory_mib']} MiB under {result['accel'].upper()} "
        f"({len(result['move_trials'])} trials each; median / max)",
        "",
        "| measure | median / max |",
        "|---|---|",
        f"| guest boot, qemu start to ready | {pair(result['boot_s'], ' s')} |",
        f"| holder crash (podman kill) to the guest answering on the VIP from another node "
        f"| {pair(result['crash_answered_s'], ' s')} |",
        f"| live move: `clusterctl failover vm --to` | {pair(result['move_command_s'], ' s')} |",
        f"| live move: qemu's migration, total | {pair(result['move_qemu_total_ms'], ' ms')} |",
        f"| live move: qemu's downtime (guest paused) "
        f"| {pair(result['move_qemu_downtime_ms'], ' ms')} |",
        f"| live move: the guest's pause on the VIP (pings every 10 ms unanswered) "
        f"| {pair(result['move_silence_ms'], ' ms')} |",
        f"| live move: the longest an HTTP request waited (attempts of 0.3 s, retried) "
        f"| {pair(result['move_longest_wait_ms'], ' ms')} |",
        "",
        f"Live moves: {result['move_failed_requests']} of {result['move_requests']} requests "
        f"failed (each retried within 1 s); the guest's boot id "
        f"{'never changed' if result['move_all_live'] else 'CHANGED'} (a live move, never a "
        "reboot).",
    ]
    return "\n".join(rows)
