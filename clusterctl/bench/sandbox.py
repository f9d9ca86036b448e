"""Looking into sandbox nodes from the host, cheaply enough to sample every few ms.

`podman exec` costs ~100 ms; entering a node's network namespace with nsenter costs a few,
so the VIP holders can be sampled while a benchmark runs.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field

from clusterctl.providers.podman_cli import Podman
from clusterctl.state import ClusterRecord


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
    """Samples which nodes hold the VIP every `period` seconds in a thread."""

    pids: dict[str, int]
    vip: str
    period: float = 0.05
    samples: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            holders = tuple(vip_holders(self.pids, self.vip))
            self.samples.append((time.monotonic(), holders))
            self._stop.wait(self.period)

    def start(self) -> HolderSampler:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, tuple[str, ...]]]:
        self._stop.set()
        self._thread.join()
        return self.samples

    @property
    def dual(self) -> int:
        """Samples in which two or more nodes held the VIP."""
        return sum(1 for _, holders in self.samples if len(holders) > 1)
