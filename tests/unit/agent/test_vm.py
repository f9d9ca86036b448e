"""The ``vm`` resource against a fake systemd and a fake qemu; QMP against a real socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from clusterctl.agent.clock import FakeClock
from clusterctl.agent.config import ConfigError, ResourceSpec, config_from_dict
from clusterctl.agent.resources import ResourceError, build_resource, qmp
from clusterctl.agent.resources.runner import CommandResult
from clusterctl.agent.resources.vm import VirtualMachine


class FakeQemuHost:
    """systemd (systemd-run, is-active, kill) and one qemu behind QMP, on a fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.running = False  # the unit (qemu) runs
        self.state = "running"  # what query-status says while it runs
        self.socket_ready = True  # qemu answers QMP
        self.obeys_powerdown = True  # the guest powers off on the ACPI button
        self.commands: list[str] = []
        self.qmp_log: list[str] = []

    # CommandRunner
    def run(self, argv: Sequence[str], timeout: float, stdin: str | None = None) -> CommandResult:
        self.clock.advance(0.01)
        line = " ".join(argv)
        if argv[:2] != ["systemctl", "is-active"]:
            self.commands.append(line)
        if argv[0] == "systemd-run":
            if self.running:
                return CommandResult(1, "", "unit already exists")
            self.running = True
            return CommandResult(0)
        if argv[:2] == ["systemctl", "is-active"]:
            return CommandResult(0 if self.running else 3)
        if argv[:2] == ["systemctl", "kill"]:
            self.running = False
            return CommandResult(0)
        return CommandResult(0)

    # qmp.execute
    def qmp(self, path: str, command: str, timeout: float, **arguments: Any) -> Any:
        self.qmp_log.append(command)
        if not self.running or not self.socket_ready:
            raise qmp.QmpError(f"QMP {command}: No such file or directory")
        if command == "query-status":
            return {"status": self.state, "running": self.state == "running"}
        if command == "quit":
            self.running = False
            return {}
        if command == "system_powerdown":
            if self.obeys_powerdown:
                self.running = False
            return {}
        if command == "migrate_cancel":
            return {}
        if command == "cont":
            self.state = "running"
            return {}
        raise qmp.QmpError(f"qemu refused: unknown command {command}")


PARAMS = {
    "disk": "",  # set per test: a real file
    "memory": 128,
    "accel": "tcg",
    "kernel": "/guest/vmlinuz",
    "initrd": "/guest/initrd.gz",
    "append": "console=ttyS0",
    "tap": "clusterctl-vm0",
    "address": "10.0.2.15",
    "mac": "52:54:00:12:34:56",
    "check_path": "/cgi-bin/status",
    "boot_timeout": 30,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def host(clock: FakeClock) -> FakeQemuHost:
    return FakeQemuHost(clock)


def make_vm(
    host: FakeQemuHost, tmp_path: Path, answers: list[bool] | None = None, **params: Any
) -> VirtualMachine:
    disk = tmp_path / "demo.img"
    disk.touch()
    checks = answers if answers is not None else []
    spec = ResourceSpec("demo", "vm", {**PARAMS, "disk": str(disk), **params})
    return VirtualMachine(
        spec,
        host,
        qmp_call=host.qmp,
        check=lambda url, timeout: checks.pop(0) if checks else True,
        clock=host.clock.now,
        sleep=host.clock.advance,
        run_dir=str(tmp_path / "run"),
        kvm_device=str(tmp_path / "kvm"),
        spawn=lambda run: run(),  # the check in the caller's thread: results at once
    )


def test_start_boots_qemu_in_a_transient_unit_once(host: FakeQemuHost, tmp_path: Path) -> None:
    vm = make_vm(host, tmp_path)
    assert vm.exclusive and not vm.prestart_safe
    vm.start(1.0)
    vm.start(1.0)  # idempotent: it runs already
    [run] = [c for c in host.commands if c.startswith("systemd-run")]
    assert "--unit clusterctl-vm-demo.service --collect" in run
    assert f"file={tmp_path / 'demo.img'},if=virtio,format=raw" in run
    assert "-machine pc,accel=tcg" in run and "-m 128" in run
    assert "-netdev tap,id=net0,ifname=clusterctl-vm0,script=no,downscript=no" in run
    assert "-device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56" in run
    assert f"-qmp unix:{tmp_path / 'run' / 'demo.qmp'},server=on,wait=off" in run
    assert vm.check_url == "http://10.0.2.15:80/cgi-bin/status"


def test_a_forwarded_port_uses_qemus_user_network(host: FakeQemuHost, tmp_path: Path) -> None:
    vm = make_vm(host, tmp_path, tap=None, address=None, forward="8080:80")
    vm.start(1.0)
    [run] = [c for c in host.commands if c.startswith("systemd-run")]
    assert "-netdev user,id=net0,hostfwd=tcp::8080-:80" in run
    assert vm.check_url == "http://127.0.0.1:8080/cgi-bin/status"


def test_start_refuses_a_missing_disk_and_missing_kvm(host: FakeQemuHost, tmp_path: Path) -> None:
    vm = make_vm(host, tmp_path, disk=str(tmp_path / "absent.img"))
    with pytest.raises(ResourceError, match="absent.img is missing"):
        vm.start(1.0)
    vm = make_vm(host, tmp_path, accel="kvm")
    with pytest.raises(ResourceError, match="no KVM here"):
        vm.start(1.0)
    assert not host.running


def test_monitor_waits_for_the_boot_then_counts_failures_in_a_row(
    host: FakeQemuHost, tmp_path: Path
) -> None:
    vm = make_vm(host, tmp_path, answers=[False, False, True, False, False, True, False, False])
    vm.start(1.0)
    host.socket_ready = False
    assert vm.monitor(0.5)  # qemu still opening its socket
    host.socket_ready = True
    assert vm.monitor(0.5)  # the guest's service does not answer yet: booting
    assert vm.monitor(0.5)
    assert vm.monitor(0.5)  # answered: booted
    assert vm.monitor(0.5) and vm.monitor(0.5)  # two misses are not a failure (fall 3)
    assert vm.monitor(0.5)  # answered again: the count starts over
    assert vm.monitor(0.5) and vm.monitor(0.5)
    host.state = "paused"
    assert not vm.monitor(0.5)


def test_three_missed_checks_in_a_row_fail_the_monitor(host: FakeQemuHost, tmp_path: Path) -> None:
    vm = make_vm(host, tmp_path, answers=[True, False, False, False])
    vm.start(1.0)
    assert vm.monitor(0.5)
    assert vm.monitor(0.5) and vm.monitor(0.5)
    assert not vm.monitor(0.5)


def test_a_guest_that_never_answers_fails_after_its_boot_timeout(
    host: FakeQemuHost, tmp_path: Path
) -> None:
    vm = make_vm(host, tmp_path, answers=[False] * 10)
    vm.start(1.0)
    assert vm.monitor(0.5) and vm.monitor(0.5) and vm.monitor(0.5)  # booting: not counted
    host.clock.advance(31)
    assert not vm.monitor(0.5)


def test_a_qemu_that_is_gone_fails_its_monitor(host: FakeQemuHost, tmp_path: Path) -> None:
    vm = make_vm(host, tmp_path)
    vm.start(1.0)
    assert vm.monitor(0.5)  # booted
    host.running = False  # killed
    assert not vm.monitor(0.5)


def test_stop_powers_the_guest_off_by_acpi(host: FakeQemuHost, tmp_path: Path) -> None:
    vm = make_vm(host, tmp_path)
    vm.start(1.0)
    vm.stop(5.0)
    assert not host.running
    assert "system_powerdown" in host.qmp_log
    assert not any("systemctl kill" in c for c in host.commands)
    vm.stop(5.0)  # idempotent


def test_stop_kills_a_guest_that_ignores_the_button(host: FakeQemuHost, tmp_path: Path) -> None:
    vm = make_vm(host, tmp_path)
    vm.start(1.0)
    host.obeys_powerdown = False
    started = host.clock.now()
    vm.stop(2.0)
    assert not host.running
    assert "systemctl kill --signal=KILL clusterctl-vm-demo.service" in host.commands
    assert host.clock.now() - started <= 2.0 + 0.1  # within its timeout


def test_stop_kills_at_once_without_qmp(host: FakeQemuHost, tmp_path: Path) -> None:
    vm = make_vm(host, tmp_path)
    vm.start(1.0)
    host.socket_ready = False
    started = host.clock.now()
    vm.stop(0.3)
    assert not host.running and host.clock.now() - started < 0.3


def test_build_resource_makes_a_vm(host: FakeQemuHost, tmp_path: Path) -> None:
    spec = ResourceSpec("demo", "vm", {"disk": str(tmp_path / "d.img"), "accel": "tcg"})
    assert isinstance(build_resource(spec, host), VirtualMachine)


def _config(resource: dict[str, Any], fencing: str = "required") -> dict[str, Any]:
    device = {"agent": "fence_docker", "options": {"plug": "node2"}}
    return {
        "node": "node1",
        "etcd_endpoints": ["http://127.0.0.1:2379"],
        "fence_devices": {"node2": device},
        "groups": [{"name": "vm", "fencing": fencing, "resources": [resource]}],
    }


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, "missing disk"),
        ({"disk": "relative.img"}, "not an absolute path"),
        ({"disk": "/d.img", "memory": 0}, "memory must be a whole number"),
        ({"disk": "/d.img", "accel": "xen"}, "accel must be one of kvm, tcg"),
        ({"disk": "/d.img", "forward": "8080"}, "not HOST_PORT:GUEST_PORT"),
        ({"disk": "/d.img", "check_path": "/"}, "check_path needs a forward or a tap"),
        ({"disk": "/d.img", "tap": "t0", "forward": "80:80"}, "tap and forward exclude"),
        ({"disk": "/d.img", "tap": "a-very-long-tap-name"}, "not an interface name"),
        ({"disk": "/d.img", "tap": "t0"}, "tap needs the guest's address"),
        ({"disk": "/d.img", "tap": "t0", "address": "guest"}, "is not an IPv4 address"),
        ({"disk": "/d.img", "mac": "52:54:00"}, "is not a MAC address"),
    ],
)
def test_bad_vm_parameters_are_refused_in_one_line(params: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        config_from_dict(_config({"name": "demo", "type": "vm", **params}))


class FakeQemuSocket:
    """A QMP server on a real unix socket: greets, negotiates, answers each command after an
    event (as qemu interleaves them)."""

    def __init__(self, path: Path, answer: dict[str, Any]) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.answer = answer
        self.received: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn, conn.makefile("rw") as f:
            f.write(json.dumps({"QMP": {"version": {}, "capabilities": []}}) + "\n")
            f.flush()
            for line in f:
                self.received.append(json.loads(line))
                f.write(json.dumps({"event": "RTC_CHANGE", "data": {}}) + "\n")
                reply = {"return": {}} if len(self.received) == 1 else self.answer
                f.write(json.dumps(reply) + "\n")
                f.flush()

    def close(self) -> None:
        self.server.close()


def test_qmp_execute_talks_qemus_protocol(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    server = FakeQemuSocket(path, {"return": {"status": "running"}})
    try:
        assert qmp.execute(str(path), "query-status", 2.0) == {"status": "running"}
    finally:
        server.close()
    assert [m["execute"] for m in server.received] == ["qmp_capabilities", "query-status"]


def test_qmp_execute_reports_a_refusal_and_a_missing_socket(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    server = FakeQemuSocket(path, {"error": {"class": "GenericError", "desc": "no migration"}})
    try:
        with pytest.raises(qmp.QmpError, match="no migration"):
            qmp.execute(str(path), "migrate", 2.0, uri="tcp:10.0.0.2:4444")
    finally:
        server.close()
    assert server.received[-1]["arguments"] == {"uri": "tcp:10.0.0.2:4444"}
    with pytest.raises(qmp.QmpError, match="QMP query-status"):
        qmp.execute(str(tmp_path / "absent.sock"), "query-status", 0.5)


def test_a_vm_group_must_be_fenced() -> None:
    good = {"name": "demo", "type": "vm", "disk": "/srv/d.img", "forward": "8080:80"}
    config_from_dict(_config(good))
    with pytest.raises(ConfigError, match="needs fencing: required"):
        config_from_dict(_config(good, fencing="none"))


def test_a_cancel_after_the_migration_completed_resumes_the_guest_here(
    host: FakeQemuHost, tmp_path: Path
) -> None:
    vm = make_vm(host, tmp_path)
    vm.start(1.0)
    host.state = "postmigrate"  # sent, and paused: the target waits, paused, for the group
    vm.migrate_cancel(1.0)
    assert host.state == "running" and host.qmp_log[-2:] == ["query-status", "cont"]
    vm.migrate_cancel(1.0)  # nothing completed: nothing resumed
    assert host.qmp_log[-1] == "query-status"


def test_a_migrated_away_copy_is_killed_at_once(host: FakeQemuHost, tmp_path: Path) -> None:
    vm = make_vm(host, tmp_path)
    vm.start(1.0)
    host.state = "postmigrate"
    started = host.clock.now()
    vm.stop(5.0)
    assert not host.running and "system_powerdown" not in host.qmp_log
    assert host.qmp_log[-2:] == ["query-status", "quit"]  # no systemctl on the move's path
    assert host.clock.now() - started < 0.1  # no ACPI wait for a guest that runs elsewhere


def test_its_state_note_is_qemus_run_state_and_booting(host: FakeQemuHost, tmp_path: Path) -> None:
    vm = make_vm(host, tmp_path, answers=[False, True])
    assert vm.state_note() is None
    vm.start(1.0)
    assert vm.monitor(1.0)  # qemu runs, the guest's service does not answer yet
    assert vm.state_note() == "booting"
    assert vm.monitor(1.0)  # it answered: booted
    assert vm.state_note() == "running"
    host.state = "paused"
    vm.monitor(1.0)
    assert vm.state_note() == "paused"
