"""Test helper (not a test module): a simulated cluster for the HA logic.

Agents share an in-memory store and a fake clock and run on fake nodes (fake ``systemctl``
and ``ip``). ``Sim`` steps the agents like the daemon would (each at its own
``next_wakeup``) and checks the safety invariant after every single step."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterctl.agent.api import Api  # noqa: E402
from clusterctl.agent.clock import FakeClock  # noqa: E402
from clusterctl.agent.config import AgentConfig, GroupSpec, ResourceSpec  # noqa: E402
from clusterctl.agent.fencing import FenceError, Fencer  # noqa: E402
from clusterctl.agent.ha import Agent  # noqa: E402
from clusterctl.agent.keys import Keys  # noqa: E402
from clusterctl.agent.peers import PeerWord, parse_word  # noqa: E402
from clusterctl.agent.resources.runner import CommandResult  # noqa: E402
from clusterctl.agent.store.memory import MemoryBackend, MemoryStore  # noqa: E402

VIP = "10.0.0.100/24"
# The kernel deletes an address with a lifetime this long after it runs out, at worst (its
# address check runs on a timer of its own: measured 0.01-0.22 s on this machine's kernel).
KERNEL_LIFETIME_LAG = 0.25


class FakeNode:
    """A node's system as the resources see it: active units, addresses, a command log."""

    def __init__(self, name: str, clock: FakeClock) -> None:
        self.name = name
        self.clock = clock
        self.units: set[str] = set()
        self.addresses: set[str] = set()
        self.expires: dict[str, float] = {}  # address -> when the kernel deletes it
        self.nft_scripts: list[str] = []  # hand-over forwarding tables
        self.fail_start: set[str] = set()
        self.launched: dict[str, list[str]] = {}  # transient unit -> its systemd-run command
        self.log: list[tuple[float, str]] = []
        self.network: Callable[[str], str | None] = lambda address: None  # who answers ARP

    def run(self, argv: Sequence[str], timeout: float, stdin: str | None = None) -> CommandResult:
        assert timeout > 0, f"non-positive timeout for {argv}"
        self.expire()
        cmd = " ".join(argv)
        self.log.append((self.clock.now(), cmd))
        match list(argv):
            case ["nft", "-f", "-"]:
                self.nft_scripts.append(stdin or "")
            case ["systemctl", "start", unit]:
                if unit in self.fail_start:
                    return CommandResult(1, "", f"Job for {unit} failed.")
                self.units.add(unit)
            case ["systemctl", "stop", unit]:
                self.units.discard(unit)
            case ["systemd-run", "--unit", unit, *command]:
                if unit in self.units:
                    return CommandResult(1, "", f"Unit {unit} was already loaded")
                self.units.add(unit)
                self.launched[unit] = command
            case ["systemctl", "kill", "--signal=KILL", unit]:
                self.units.discard(unit)
            case ["systemctl", "reset-failed", _]:
                pass
            case ["systemctl", "is-active", "--quiet", unit]:
                return CommandResult(0 if unit in self.units else 3)
            case ["ip", "-o", "-4", "addr", "show", "dev", iface]:
                lines = [f"2: {iface}    inet {a} scope global {iface}\n" for a in self.addresses]
                return CommandResult(0, "".join(lines))
            case ["ip", "addr", "add", cidr, "dev", _]:
                if cidr in self.addresses:
                    return CommandResult(2, "", "RTNETLINK answers: File exists")
                self.addresses.add(cidr)
            case ["ip", "addr", "replace", cidr, "dev", _, "valid_lft", lifetime, *_]:
                self.addresses.add(cidr)
                self.expires[cidr] = self.clock.now() + int(lifetime) + KERNEL_LIFETIME_LAG
            case ["ip", "addr", "del", cidr, "dev", _]:
                if cidr not in self.addresses:
                    return CommandResult(2, "", "RTNETLINK answers: Cannot assign")
                self.addresses.discard(cidr)
                self.expires.pop(cidr, None)
            case _:
                return CommandResult(127, "", f"unknown command {cmd}")
        return CommandResult(0)

    def set_address(
        self, interface: str, cidr: str, lifetime: int | None, timeout: float
    ) -> CommandResult:
        """The netlink call, logged as the `ip` command that does the same."""
        if lifetime is None:
            return self.run(["ip", "addr", "add", cidr, "dev", interface], timeout)
        argv = ["ip", "addr", "replace", cidr, "dev", interface, "valid_lft", str(lifetime)]
        return self.run([*argv, "preferred_lft", str(lifetime)], timeout)

    def address_owner(self, interface: str, address: str) -> str | None:
        return self.network(address)

    def expire(self) -> None:
        """The kernel's part: addresses whose lifetime ran out are gone, whatever the node's
        processes do (a frozen node's too)."""
        for cidr, when in list(self.expires.items()):
            if when <= self.clock.now():
                self.addresses.discard(cidr)
                del self.expires[cidr]

    def times(self, command: str) -> list[float]:
        return [t for t, c in self.log if c == command]


class CountingStore(MemoryStore):
    """A MemoryStore that counts the calls its client made; each call takes ``latency``
    seconds of the fake clock (a loaded node), if set."""

    calls = 0
    latency = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.renewals: list[tuple[float, bool]] = []  # (when, confirmed) of each keepalive

    def keepalive(self, lease_id: int, timeout: float | None = None, confirm: bool = True) -> float:
        self.renewals.append((self.backend.clock.now(), confirm))
        return super().keepalive(lease_id, timeout, confirm)

    def _enter(self, timeout: float | None) -> None:
        self.calls += 1
        if self.latency:
            self.backend.clock.advance(self.latency)
        super()._enter(timeout)


def shared_group() -> GroupSpec:
    """A group on shared storage: a VIP then a writer (nothing pre-started), fenced."""
    resources = (
        ResourceSpec("vip", "vip", {"address": "10.0.0.100", "prefix": 24, "interface": "eth0"}),
        ResourceSpec("writer", "systemd", {"unit": "writer.service"}),
    )
    return GroupSpec(name="web", resources=resources, fencing="required")


class SimFenceDevice:
    """A node's power switch: ``off`` crashes it (a dead node is off already)."""

    def __init__(self, sim: Sim, node: str) -> None:
        self.sim = sim
        self.node = node

    def off(self, timeout: float) -> str:
        if self.node in self.sim.fence_broken:
            raise FenceError(f"{self.node}'s device does not answer")
        self.sim.fences.append((self.sim.clock.now(), self.node))
        self.sim.crash(self.node)
        return "off"

    def status(self, timeout: float) -> str:
        return "off" if self.node in self.sim.dead else "on"


def web_group(**overrides: Any) -> GroupSpec:
    """The standard group: a VIP then nginx (prestart_safe, as a stateless web server)."""
    resources = (
        ResourceSpec("vip", "vip", {"address": "10.0.0.100", "prefix": 24, "interface": "eth0"}),
        ResourceSpec("nginx", "systemd", {"unit": "nginx.service"}, prestart_safe=True),
    )
    return GroupSpec(**{"name": "web", "resources": resources, **overrides})


@dataclass
class Sim:
    """A cluster of agents. Time moves only in ``run``; every step is checked."""

    nodes: Sequence[str] = ("node1", "node2", "node3")
    group: GroupSpec = field(default_factory=web_group)
    settings: dict[str, Any] = field(default_factory=dict)
    granularity: float = 0.0
    addresses: bool = False  # give nodes addresses (node1 = 10.0.0.11, ...)
    peer_words: bool = True  # standbys hear the holders' word (agent/peers.py)
    # called with each (re)started agent (to give it other resources), and after every step
    wire: Callable[[str, Agent], None] | None = None
    invariants: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.clock = FakeClock()
        self.start = self.clock.now()
        self.backend = MemoryBackend(self.clock, expiry_granularity=self.granularity)
        self.keys = Keys("demo")
        self.fake: dict[str, FakeNode] = {}
        self.agents: dict[str, Agent] = {}
        self.stores: dict[str, CountingStore] = {}
        self.wake: dict[str, float] = {}
        self.frozen: set[str] = set()
        self.dead: set[str] = set()
        self.said: dict[str, list[tuple[float, str]]] = {}
        self.arps: list[tuple[float, str, str]] = []
        self.admin = MemoryStore(self.backend, "admin")
        self.fences: list[tuple[float, str]] = []  # (when, node) of every device fence
        self.fence_broken: set[str] = set()  # nodes whose fence device fails
        self.cut: set[str] = set()  # partitioned nodes: no store, no peer words either
        self.stopped: set[str] = set()  # agents that exited: their API refuses connections
        self.words: dict[tuple[str, str], PeerWord] = {}  # (asker, peer) -> last word
        for node in self.nodes:
            self.add(node)

    # -- cluster life ----------------------------------------------------------------------

    def config(self, node: str) -> AgentConfig:
        extra: dict[str, Any] = {}
        if self.addresses:
            extra["address"] = f"10.0.0.{11 + list(self.nodes).index(node)}"
        if self.group.needs_fencing:
            extra["fence_devices"] = {n: {"agent": "fence_sim"} for n in self.nodes}
        return AgentConfig(
            node=node,
            etcd_endpoints=("http://127.0.0.1:2379",),
            **extra,
            groups=(self.group,),
            **self.settings,
        ).validate()

    def add(self, node: str) -> Agent:
        """(Re)start an agent on ``node``: a fresh process on a clean node."""
        self.fake[node] = FakeNode(node, self.clock)
        self.stores[node] = CountingStore(self.backend, node)
        self.agents[node] = Agent(
            self.config(node),
            self.stores[node],
            self.clock,
            self.fake[node],
            arp_sender=lambda iface, addr, node=node: self.arps.append(
                (self.clock.now(), node, addr)
            ),
            fencer=Fencer({n: SimFenceDevice(self, n) for n in self.nodes}, 60.0, background=False),
        )
        self.fake[node].network = lambda address, node=node: self.arp_owner(node, address)
        self.agents[node].peers = SimPeers(self, node)
        if self.wire is not None:
            self.wire(node, self.agents[node])
        self.wake[node] = self.clock.now()
        self.dead.discard(node)
        self.stopped.discard(node)
        self.said.setdefault(node, [])
        return self.agents[node]

    def crash(self, node: str) -> None:
        """The node dies (podman kill): its process and its addresses are gone."""
        self.dead.add(node)
        self.fake[node].addresses.clear()
        self.fake[node].units.clear()

    def stop_agent(self, node: str) -> str:
        """systemctl stop: the agent shuts down cleanly and its API goes with it."""
        sentence = self.agents[node].shutdown()
        self.stopped.add(node)
        self.dead.add(node)
        return sentence

    def freeze(self, node: str) -> None:
        self.frozen.add(node)

    def thaw(self, node: str) -> str:
        """Resume a frozen node; its agent runs at once (its timer is long overdue)."""
        self.frozen.discard(node)
        return self.step(node)

    def partition(self, node: str, hang: bool = False) -> None:
        self.backend.partition(node, hang=hang)
        self.cut.add(node)

    def heal(self, node: str) -> None:
        self.backend.heal(node)
        self.cut.discard(node)

    def arp_owner(self, asker: str, address: str) -> str | None:
        """Who answers ``asker``'s ARP probe for ``address``: any other node whose kernel
        has it, a frozen one's included; not a dead one, nor across a partition."""
        for node in self.nodes:
            fake = self.fake[node]
            fake.expire()
            if node == asker or node in self.dead or {asker, node} & self.cut:
                continue
            if any(a.split("/")[0] == address for a in fake.addresses):
                return f"02:00:00:00:00:{list(self.nodes).index(node) + 1:02x}"
        return None

    def ask(self, asker: str, peer: str) -> None:
        """``asker``'s PeerWatch asks ``peer``: its real ``/v1/health`` answer if both can
        reach each other and the peer's agent runs (the real client raises on a 503)."""
        key = (asker, peer)
        if not self.peer_words or peer in self.stopped:
            self.words.pop(key, None)  # nothing listens: the connection is refused
            return
        if {asker, peer} & (self.dead | self.frozen | self.cut):
            return  # no answer: the last word stays
        reply = Api(self.agents[peer], "sim-token").health()
        if reply.status == 200:
            word = parse_word(peer, json.loads(reply.body), self.clock.now())
            if word is not None:
                self.words[key] = word

    # -- time ------------------------------------------------------------------------------

    def live(self) -> list[str]:
        return [n for n in self.nodes if n not in self.dead and n not in self.frozen]

    def step(self, node: str) -> str:
        for peer in self.nodes:  # what its PeerWatch thread would have heard by now
            last = self.words.get((node, peer))
            if peer != node and (last is None or self.clock.now() - last.asked_at >= 0.2):
                self.ask(node, peer)
        sentence = self.agents[node].step()
        self.said[node].append((self.clock.now(), sentence))
        self.wake[node] = self.agents[node].next_wakeup()
        self.check()
        return sentence

    def run(self, seconds: float) -> None:
        """Advance ``seconds``, stepping each agent whenever its wake-up time comes."""
        end = self.clock.now() + seconds
        while True:
            live = self.live()
            due = min((self.wake[n] for n in live), default=end)
            if due > end:
                # A hanging store call may already have carried the clock past ``end``.
                self.clock.advance(max(0.0, end - self.clock.now()))
                return
            if due > self.clock.now():
                self.clock.advance(due - self.clock.now())
            for node in live:
                if self.wake[node] <= self.clock.now():
                    self.step(node)

    def run_until(self, predicate: Any, timeout: float, dt: float = 0.01) -> float:
        """Run until ``predicate()`` holds; return the simulated time it took."""
        began = self.clock.now()
        while not predicate():
            if self.clock.now() - began > timeout:
                raise AssertionError(f"not reached within {timeout} simulated s")
            self.run(dt)
        return self.clock.now() - began

    # -- what is true now ------------------------------------------------------------------

    def vip_on(self) -> list[str]:
        for fake in self.fake.values():
            fake.expire()
        return [n for n in self.nodes if VIP in self.fake[n].addresses and n not in self.dead]

    def nginx_on(self) -> list[str]:
        return [n for n in self.nodes if "nginx.service" in self.fake[n].units]

    def leader(self) -> str | None:
        return self.backend.dump().get(self.keys.leader("web"))

    def last(self, node: str) -> str:
        return self.said[node][-1][1]

    def sentences(self, node: str) -> list[str]:
        return [s for _, s in self.said[node]]

    def check(self) -> None:
        """The safety invariant, checked after every step.

        A node that has the VIP and is running (not frozen: a frozen node cannot act, and
        fences itself on its first step after thawing) must be the one named by the leader
        key, which exists only while its lease does. Hence never two holders. A frozen
        node's VIP with a lifetime is still served by its kernel until the lifetime runs
        out: it counts as a holder until then (one without a lifetime is not modelled).
        """
        on = self.vip_on()
        active = [n for n in on if n not in self.frozen]
        kernel = [n for n in on if n not in active and VIP in self.fake[n].expires]
        assert len(active + kernel) <= 1, f"two VIP holders at t={self.clock.now()}: {on}"
        # shared storage: a frozen node's writer still exists and writes the moment it
        # thaws, so it counts (a crashed or fenced node's does not)
        writers = [n for n in self.nodes if "writer.service" in self.fake[n].units]
        assert len(writers) <= 1, f"two writers at t={self.clock.now()}: {writers}"
        for invariant in self.invariants:
            invariant()
        for node in active:
            lease = self.agents[node].lease
            # a lease revoked before it could expire (a stale etcd leader): the holder holds
            # on until its deadline or takes the group back (agent/peers.py)
            revoked = lease.lease_id not in self.backend._leases and lease.valid(self.clock.now())
            assert self.leader() == node or (self.leader() is None and revoked), (
                f"{node} has the VIP at t={self.clock.now() - self.start:.3f} "
                f"but the leader key is {self.leader()!r}"
            )


class SimPeers:
    """A PeerWatch in the simulation: asks every peer each renewal interval (``Sim.step``),
    and at once when the agent wants a fresh word."""

    def __init__(self, sim: Sim, node: str) -> None:
        self.sim = sim
        self.node = node

    def latest(self, node: str) -> PeerWord | None:
        return self.sim.words.get((self.node, node))

    def refresh(self, node: str) -> None:
        self.sim.ask(self.node, node)


def holder(sim: Sim) -> str:
    """Let a fresh cluster settle for a second; the one node that then holds the group."""
    sim.run(1.0)
    (node,) = sim.vip_on()
    return node
