"""A virtual machine's group on simulated nodes: a planned move migrates the guest live, a
failed migration leaves it where it ran, a holder that dies mid-migration is fenced and the
guest boots afresh elsewhere, and a guest never runs on two nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clusterctl.agent import admin
from clusterctl.agent.config import GroupSpec, ResourceSpec
from clusterctl.agent.ha import Agent
from clusterctl.agent.resources import qmp
from clusterctl.agent.resources.vm import VirtualMachine

from .agentsim import Sim

UNIT = "clusterctl-vm-guest.service"
MIGRATION_SECONDS = 0.5  # simulated time qemu takes to send the guest's memory


class QemuWorld:
    """One qemu per node as QMP shows it, and live migrations between them."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.state: dict[str, str] = {}  # node -> qemu's run state
        self.launch: dict[str, int] = {}  # node -> id of the command its state is from
        self.boots: list[str] = []  # nodes where a guest booted afresh
        self.migration: dict[str, tuple[str, float]] = {}  # source -> (target, began)
        self.fail_next = False
        self.paused_at: float | None = None  # when the last migration paused the guest
        self.resumed_at: float | None = None  # when its target resumed it
        self.resumed_on_source: str | None = None  # a cancelled move: the source went on
        self.ignores_acpi = False  # a guest that does not power off on the button

    def qemu(self, node: str) -> str | None:
        """The node's qemu's state, or None when its unit does not run."""
        fake = self.sim.fake[node]
        if UNIT not in fake.units or node in self.sim.dead:
            self.state.pop(node, None)
            return None
        command = fake.launched[UNIT]
        if self.launch.get(node) != id(command):  # a new qemu since we last looked
            self.launch[node] = id(command)
            incoming = "-incoming" in command
            self.state[node] = "inmigrate" if incoming else "running"
            if not incoming:
                self.boots.append(node)
        return self.state[node]

    def running(self) -> list[str]:
        return [n for n in self.sim.nodes if self.qemu(n) == "running"]

    def qmp_for(self, node: str) -> Any:
        def call(path: str, command: str, timeout: float, **arguments: Any) -> Any:
            state = self.qemu(node)
            if state is None:
                raise qmp.QmpError(f"QMP {command}: No such file or directory")
            now = self.sim.clock.now()
            if command == "query-status":
                return {"status": state}
            if command in ("migrate-set-capabilities", "migrate-incoming"):
                return {}
            if command == "cont":
                self.state[node] = "running"
                if self.paused_at is not None and node != self.resumed_on_source:
                    self.resumed_at = now
                return {}
            if command == "quit":
                self.sim.fake[node].units.discard(UNIT)
                return {}
            if command == "system_powerdown":
                if not self.ignores_acpi:
                    self.sim.fake[node].units.discard(UNIT)
                return {}
            if command == "migrate":
                target = next(
                    n for n in self.sim.nodes if arguments["uri"].startswith(f"tcp:{address(n)}:")
                )
                self.migration[node] = (target, now)
                return {}
            if command == "query-migrate":
                return self._progress(node, now)
            if command == "migrate_cancel":
                self.migration.pop(node, None)
                return {}
            raise qmp.QmpError(f"qemu refused: unknown command {command}")

        return call

    def _progress(self, source: str, now: float) -> dict[str, Any]:
        if source not in self.migration:
            return {"status": "completed"} if self.state[source] == "postmigrate" else {}
        target, began = self.migration[source]
        if self.fail_next or self.qemu(target) != "inmigrate":
            self.fail_next = False
            del self.migration[source]
            return {"status": "failed", "error-desc": "Connection refused"}
        if now - began < MIGRATION_SECONDS:
            return {"status": "active"}
        del self.migration[source]
        self.state[source] = "postmigrate"
        self.state[target] = "paused"
        self.paused_at = now
        return {"status": "completed", "total-time": 500, "downtime": 3}

    def check(self) -> None:
        running = self.running()
        assert len(running) <= 1, f"the guest runs on {running} at t={self.sim.clock.now()}"


def address(node: str) -> str:
    return f"10.0.0.{10 + int(node.removeprefix('node'))}"


@pytest.fixture
def world(tmp_path: Path) -> tuple[Sim, QemuWorld]:
    disk = tmp_path / "guest.img"
    disk.touch()
    spec = ResourceSpec(
        "guest", "vm", {"disk": str(disk), "accel": "tcg", "forward": "8080:80"}, timeout=5.0
    )
    group = GroupSpec(
        name="web",
        fencing="required",
        resources=(
            ResourceSpec(
                "vip", "vip", {"address": "10.0.0.100", "prefix": 24, "interface": "eth0"}
            ),
            spec,
        ),
    )
    holder: dict[str, QemuWorld] = {}

    def wire(node: str, agent: Agent) -> None:
        runner = agent.groups["web"]
        runner.resources[1] = VirtualMachine(
            spec,
            sim.fake[node],
            qmp_call=holder["world"].qmp_for(node),
            check=lambda url, timeout: True,
            clock=sim.clock.now,
            sleep=sim.clock.advance,
            run_dir=str(tmp_path / node),
        )

    sim = Sim.__new__(Sim)  # the world needs the sim, the sim's agents need the world
    holder["world"] = QemuWorld(sim)
    Sim.__init__(sim, group=group, addresses=True, wire=wire)
    world = holder["world"]
    sim.invariants.append(world.check)
    sim.run_until(lambda: len(world.running()) == 1, timeout=5.0)
    return sim, world


def move(sim: Sim, target: str) -> None:
    admin.request_move(sim.admin, sim.keys, "web", target)


def test_a_planned_move_migrates_the_guest_live(world: tuple[Sim, QemuWorld]) -> None:
    sim, qemu = world
    (source,) = qemu.running()
    target = next(n for n in sim.nodes if n != source)
    booted = list(qemu.boots)
    move(sim, target)
    sim.run_until(lambda: qemu.running() == [target] and sim.leader() == target, timeout=5.0)
    assert qemu.boots == booted  # it came over running, never booted again
    assert qemu.qemu(source) is None  # the paused copy quit
    assert qemu.paused_at is not None and qemu.resumed_at is not None
    assert qemu.resumed_at - qemu.paused_at <= 0.1  # the guest's pause, in simulated time
    assert sim.fences == []  # a planned move fences nobody
    events = [e.event for e in sim.agents[source].history.pending()]
    assert "migrated" in events
    assert any(s.startswith("pre-started guest (incoming)") for s in sim.sentences(target))
    sim.run(1.0)
    assert sim.backend.dump().get(sim.keys.move("web")) is None  # the move is done


def test_a_failed_migration_leaves_the_guest_where_it_ran(world: tuple[Sim, QemuWorld]) -> None:
    sim, qemu = world
    (source,) = qemu.running()
    target = next(n for n in sim.nodes if n != source)
    qemu.fail_next = True
    move(sim, target)
    sim.run_until(lambda: sim.backend.dump().get(sim.keys.move("web")) is None, timeout=5.0)
    sim.run(0.5)
    assert qemu.running() == [source] and sim.leader() == source
    assert qemu.qemu(target) is None  # the target stopped its incoming qemu
    failed = "live migration of guest failed (Connection refused)"  # qemu's reason kept
    assert any(failed in s for s in sim.sentences(source))


def test_a_holder_that_dies_mid_migration_is_fenced_and_the_guest_boots_afresh(
    world: tuple[Sim, QemuWorld],
) -> None:
    sim, qemu = world
    (source,) = qemu.running()
    target = next(n for n in sim.nodes if n != source)
    move(sim, target)
    sim.run_until(lambda: source in qemu.migration, timeout=5.0)
    sim.crash(source)  # mid-migration: the target's copy never got the whole state
    sim.run_until(lambda: len(qemu.running()) == 1, timeout=10.0)
    (now_on,) = qemu.running()
    assert now_on != source
    assert [n for _, n in sim.fences] == [source]  # the disk's old user is off first
    assert qemu.boots[-1] == now_on  # a fresh boot, not the half-migrated state


def test_a_withdrawn_move_stops_the_migration_and_the_guest_runs_on(
    world: tuple[Sim, QemuWorld],
) -> None:
    sim, qemu = world
    (source,) = qemu.running()
    target = next(n for n in sim.nodes if n != source)
    booted = list(qemu.boots)
    move(sim, target)
    sim.run_until(lambda: source in qemu.migration, timeout=5.0)
    admin.cancel_move(sim.admin, sim.keys, "web")  # `clusterctl clear`, or the move expired
    sim.run(1.0)
    assert qemu.running() == [source] and sim.leader() == source
    assert source not in qemu.migration and qemu.qemu(target) is None
    assert qemu.boots == booted  # never rebooted
    assert any("cancelled: the move was withdrawn" in s for s in sim.sentences(source))


def test_an_agent_stopping_stops_its_guest_within_the_lease(
    world: tuple[Sim, QemuWorld],
) -> None:
    # The guest's stop may take its resource's whole timeout (5 s here); an agent that
    # spent it while stopping would outlive its lease, and the next holder would fence it.
    sim, qemu = world
    (source,) = qemu.running()
    qemu.ignores_acpi = True
    lease_ttl = sim.agents[source].config.lease_ttl
    began = sim.clock.now()
    sentence = sim.stop_agent(source)
    assert sim.clock.now() - began < lease_ttl
    assert sentence == "shutting down: stopped web, released it, revoked lease"
    assert qemu.qemu(source) is None  # killed, since it would not power off in time
    sim.run_until(lambda: len(qemu.running()) == 1, timeout=5.0)
    assert sim.fences == []
