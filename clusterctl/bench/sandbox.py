"""Looking into sandbox nodes from the host, cheaply enough to sample every few ms.

`podman exec` costs ~100 ms; entering a node's network namespace with nsenter costs a few,
so the VIP holders can be sampled while a benchmark runs.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clusterctl.errors import ClusterctlError
from clusterctl.faults import SandboxFaults
from clusterctl.providers.podman_cli import Podman
from clusterctl.reporter import Reporter
from clusterctl.state import ClusterRecord, StateDir

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    """Move the calling thread (only it) into the network namespace behind ``fd``."""
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def local_addresses(fib_trie: str) -> set[str]:
    """The IPv4 addresses that ``/proc/net/fib_trie`` lists as this namespace's own: a
    ``|-- <address>`` line followed by ``/32 host LOCAL``."""
    found: set[str] = set()
    last = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|--"):
            last = text[3:].strip()
        elif text.startswith("/32 host LOCAL") and last:
            found.add(last)
    return found


def node_pids(podman: Podman, record: ClusterRecord) -> dict[str, int]:
    """PID of each running node's init process (0 when the node is not running)."""
    pids = {}
    for node in record.nodes:
        proc = podman.run("inspect", "--format", "{{.State.Pid}}", node.container, check=False)
        pids[node.name] = int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0
    return pids


def has_address(pid: int, address: str, interface: str = "eth0") -> bool | None:
    """Whether the node with this PID has `address` on `interface`; None if unknown."""
    if pid <= 0:
        return None
    proc = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-br", "-4", "addr", "show", interface],
        capture_output=True,
        text=True,
        timeout=5,
    )
    if proc.returncode != 0:
        return None
    return any(part.split("/")[0] == address for part in proc.stdout.split()[2:])


def vip_holders(pids: dict[str, int], vip: str) -> list[str]:
    return [name for name, pid in pids.items() if has_address(pid, vip)]


@dataclass
class HolderSampler:
    """Samples which nodes hold the VIP every `period` seconds in a thread.

    Each node's network namespace is held open (a file descriptor taken from its init's PID
    when the sampler starts or ``refresh`` is called): a PID that a crashed node's init had
    may belong to another node's process seconds later (pid_max is 32,768 here and the host
    makes processes fast), and entering a namespace by PID would then read the wrong node.
    A crashed node's held namespace shows no VIP until ``refresh`` opens the new one."""

    pids: dict[str, int]
    vip: str
    period: float = 0.05
    samples: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.error = ""  # why the sampling thread stopped early, if it did
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._netns: dict[str, int] = {}
        self._lock = threading.Lock()
        self.refresh(self.pids)

    def refresh(self, pids: dict[str, int]) -> None:
        """Hold the namespaces of these PIDs from now on (0: the node is not running)."""
        opened = {}
        for name, pid in pids.items():
            if pid > 0:
                try:
                    opened[name] = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
                except OSError:
                    continue
        with self._lock:
            old, self._netns = self._netns, {**self._netns, **opened}
            self.pids.update(pids)
        for name, fd in old.items():
            if name in opened:
                os.close(fd)

    def _has_vip(self, fd: int) -> bool:
        """Whether the namespace behind ``fd`` has the VIP as a local address. This thread
        enters the namespace (setns) and reads its routing trie: no process per sample (three
        ``nsenter ip`` per round held a round to ~0.15 s on a loaded machine, not 0.05 s)."""
        _setns(fd)
        try:
            with open("/proc/thread-self/net/fib_trie") as trie:
                return self.vip in local_addresses(trie.read())
        except OSError:
            return False

    def _loop(self) -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)  # this thread's own
        try:
            while not self._stop.is_set():
                # The whole round under the lock: ``refresh`` closes the descriptors it
                # replaces, and one closed (or, worse, reused for another node's namespace)
                # in the middle of a round killed the sampler of a 600 s chaos run.
                with self._lock:
                    holders = tuple(n for n, fd in self._netns.items() if self._has_vip(fd))
                    _setns(home)
                self.samples.append((time.monotonic(), holders))
                self._stop.wait(self.period)
        except Exception as exc:  # noqa: BLE001 - reported: the samples stopped here
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            os.close(home)

    def start(self) -> HolderSampler:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, tuple[str, ...]]]:
        self._stop.set()
        self._thread.join()
        with self._lock:
            for fd in self._netns.values():
                os.close(fd)
            self._netns = {}
        return self.samples

    @property
    def dual(self) -> int:
        """Samples in which two or more nodes held the VIP."""
        return sum(1 for _, holders in self.samples if len(holders) > 1)


class SandboxBench:
    """What every benchmark on a sandbox holds: the cluster's record, podman, and the fault
    injector. A subclass says which clusters it runs on (``fits``, described by ``wants``)."""

    kind = ""  # the `clusterctl bench` command
    wants = "a podman sandbox"

    def fits(self, record: ClusterRecord) -> bool:
        return record.provider == "podman"

    def __init__(self, cluster: str, reporter: Reporter) -> None:
        self.cluster = cluster
        self.reporter = reporter
        self.state = StateDir(cluster)
        self.record = self.state.load()
        if not self.fits(self.record):
            raise ClusterctlError(
                f"cluster {cluster!r} is not {self.wants}",
                f"run `clusterctl bench {self.kind}` without --cluster: it makes its own sandbox",
            )
        self.podman = Podman(self.state.root)
        self.faults = SandboxFaults(self.podman, self.record, tls=None)  # kills need no etcd

    def reload(self) -> None:
        """The record again (after a scale), and faults for its nodes."""
        self.record = self.state.load()
        self.faults = SandboxFaults(self.podman, self.record, tls=None)


def wait_until(done: Callable[[], bool], what: str, timeout: float, poll: float = 0.5) -> None:
    """Poll ``done`` until it is true (a ClusterctlError from it counts as not yet); one
    clear error after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if done():
                return
        except ClusterctlError:
            pass
        if time.monotonic() > deadline:
            raise ClusterctlError(f"{what}: not within {timeout:.0f} s", "see clusterctl status")
        time.sleep(poll)


def pid_namespace(pid: int) -> str:
    """The PID namespace of a process ("pid:[inode]"), or "" when it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def processes_named(comm: str) -> list[int]:
    """The PIDs of this host's processes whose name (``/proc/PID/comm``) is ``comm``: the
    host sees every node's processes (rootful containers share its kernel)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as name:
                if name.read().strip() == comm:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass
class ProcessSampler:
    """Samples on which nodes a process named ``comm`` runs, every ``period`` seconds, from
    the host: a process belongs to the node whose init shares its PID namespace. No process
    per sample (``podman exec`` costs ~100 ms) and no agent on the nodes. A killed node has
    no processes, so it never counts; ``refresh`` learns a restarted node's namespace."""

    pids: dict[str, int]  # node -> PID of its init (node_pids)
    comm: str
    period: float = 0.05
    samples: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._lock = threading.Lock()
        self._nodes: dict[str, str] = {}  # PID namespace -> node
        self.refresh(self.pids)

    def refresh(self, pids: dict[str, int]) -> None:
        spaces = {pid_namespace(pid): name for name, pid in pids.items() if pid > 0}
        spaces.pop("", None)
        with self._lock:
            self._nodes = {ns: n for ns, n in self._nodes.items() if n not in pids} | spaces

    def running_on(self) -> tuple[str, ...]:
        with self._lock:
            nodes = self._nodes
        return tuple(sorted({nodes[ns] for p in processes_named(self.comm)
                             if (ns := pid_namespace(p)) in nodes}))  # fmt: skip

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.running_on()))
            self._stop.wait(self.period)

    def start(self) -> ProcessSampler:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, tuple[str, ...]]]:
        self._stop.set()
        self._thread.join()
        return self.samples

    @property
    def dual(self) -> int:
        """Samples in which the process ran on two or more nodes."""
        return sum(1 for _, nodes in self.samples if len(nodes) > 1)
