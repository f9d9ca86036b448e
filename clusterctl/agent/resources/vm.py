"""A virtual machine as a resource: a qemu guest whose disk is on shared storage.

qemu runs as a transient systemd unit (``clusterctl-vm-<name>.service``, made by
``systemd-run``), so systemd supervises it, the agent's stop-post script can kill it when the
agent dies, and nothing of it outlives a stop. The agent talks to it over QMP
(``/run/clusterctl/vm/<name>.qmp``).

* start: boot the guest here (returns once qemu runs; the guest boots meanwhile).
* monitor: QMP ``query-status`` says running, and the application check (an HTTP GET of the
  guest's address on its tap network, or through a forwarded port) answers. While the guest
  boots (until its first good check, at most ``boot_timeout`` seconds) a failing check is not
  a failure.
* stop: an ACPI power-button press (QMP ``system_powerdown``), then SIGKILL to what is left
  when the time is up. Near the fencing deadline the time is short and the kill comes at once:
  the disk must be closed before the lease can expire. A copy that runs no guest code (paused,
  migrated away, waiting for an incoming migration) is killed at once.
* live migration (a planned move): the target starts qemu paused (``-S``), waiting for the
  state (``-incoming defer``, ``late-block-activate``: it does not take the disk's write lock
  yet); the holder sends it (QMP ``migrate``); once completed the holder quits its paused copy
  and releases the group, and the target's ``start`` resumes (``cont``) the copy that came
  in. The target stays paused until it holds the group: if the holder died in between,
  whoever takes the group next fences it and boots the guest, and no second copy may run.

qemu's own image locking stays on: a second qemu on any node that shares the disk's file
locks (one kernel, as in the sandbox, or NFSv4) cannot open it for writing. It does not
protect against a frozen holder that still holds its lock, nor across storage without
shared locks: that is what the group's ``fencing: required`` is for.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterctl.agent.config import ResourceSpec
from clusterctl.agent.resources import qmp
from clusterctl.agent.resources.base import MigrationStatus, Resource, ResourceError
from clusterctl.agent.resources.runner import CommandRunner
from clusterctl.agent.resources.systemd import NOT_ACTIVE
from clusterctl.agent.vmspec import parse_forwards, validate_params

log = logging.getLogger(__name__)

RUN_DIR = "/run/clusterctl/vm"
LOG_DIR = "/var/log/clusterctl"
QEMU = "qemu-system-x86_64"
POLL = 0.01  # seconds between checks while a guest powers off or qemu dies
MIGRATION_PORT = 7491  # where a move target's incoming qemu listens (the guard admits members)

QmpCall = Callable[..., Any]  # qmp.execute's signature
HttpCheck = Callable[[str, float], bool]


def http_ok(url: str, timeout: float) -> bool:
    """Whether ``url`` answers 2xx within ``timeout``."""
    try:
        with urllib.request.urlopen(url, timeout=max(timeout, 0.01)) as reply:  # noqa: S310
            return 200 <= reply.status < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


class AppCheck:
    """The application check, off the agent's loop: each check may take ``timeout`` seconds
    (a guest under load answers slower than the loop's operations may wait, which are cut
    short near the fencing deadline), and only ``fall`` failures in a row count. Seen on
    the sandbox: a guest busy with 50 requests a second missed one 0.3 s check, and was
    rebooted for it."""

    def __init__(
        self,
        url: str,
        check: HttpCheck,
        timeout: float,
        fall: int,
        spawn: Callable[[Callable[[], None]], None],
    ) -> None:
        self.url = url
        self.check = check
        self.timeout = timeout
        self.fall = fall
        self.spawn = spawn
        self._lock = threading.Lock()
        self._running = False
        self.failures = 0  # in a row
        self.answered = False  # since the last reset

    def reset(self) -> None:
        with self._lock:
            self.failures = 0
            self.answered = False

    def poll(self) -> None:
        """Start a check unless one is under way; its result counts when it comes."""
        with self._lock:
            if self._running:
                return
            self._running = True
        self.spawn(self._run)

    @property
    def failing(self) -> bool:
        return self.failures >= self.fall

    def _run(self) -> None:
        ok = False
        try:
            ok = self.check(self.url, self.timeout)
        finally:
            with self._lock:
                self._running = False
                self.failures = 0 if ok else self.failures + 1
                self.answered = self.answered or ok


def _in_thread(run: Callable[[], None]) -> None:
    threading.Thread(target=run, name="vm-check", daemon=True).start()


class VirtualMachine(Resource):
    """Params: ``disk`` (on shared storage), ``memory`` (MiB, 128), ``vcpus`` (1), ``accel``
    (kvm | tcg), ``kernel``/``initrd``/``append`` (direct kernel boot; else the disk boots),
    the guest's network, one of: ``tap`` (a tap interface every node has alike, routed by
    the node: the vm role's) with ``address`` (the guest's), ``mac`` (its network card's, which
    the nodes know in advance) and ``check_port`` (80), or
    ``forward`` ("8080:80": a node port to a guest port, through qemu's user network, whose
    connections die with the copy that served them); ``check_path`` (HTTP path checked at
    the guest's address, or through the first forward), ``boot_timeout`` (60 s)."""

    def __init__(
        self,
        spec: ResourceSpec,
        runner: CommandRunner,
        qmp_call: QmpCall = qmp.execute,
        check: HttpCheck = http_ok,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        run_dir: str = RUN_DIR,
        kvm_device: str = "/dev/kvm",
        spawn: Callable[[Callable[[], None]], None] = _in_thread,
    ) -> None:
        super().__init__(spec, runner)
        validate_params(spec.params)
        self.qmp_call = qmp_call
        self.check = check
        self.clock = clock
        self.sleep = sleep
        self.run_dir = run_dir
        self.kvm_device = kvm_device
        self.forwards = parse_forwards(spec.params.get("forward"))
        # None: not booting (never started here, or its check answered since the start)
        self.booting_since: float | None = None
        self.last_state: str | None = None  # qemu's run state when QMP last answered
        url = self.check_url
        self.app = None
        if url is not None:
            timeout = float(spec.params.get("check_timeout", 2.0))
            fall = int(spec.params.get("check_fall", 3))
            self.app = AppCheck(url, check, timeout, fall, spawn)

    # -- the pieces ----------------------------------------------------------------------

    @property
    def unit(self) -> str:
        return f"clusterctl-vm-{self.name}.service"

    @property
    def qmp_path(self) -> str:
        return f"{self.run_dir}/{self.name}.qmp"

    @property
    def serial_log(self) -> str:
        return str(self.spec.params.get("serial_log", f"{LOG_DIR}/vm-{self.name}.log"))

    @property
    def accel(self) -> str:
        return str(self.spec.params.get("accel", "kvm"))

    @property
    def check_url(self) -> str | None:
        params = self.spec.params
        path = params.get("check_path")
        if not path:
            return None
        if params.get("tap"):
            return f"http://{params['address']}:{int(params.get('check_port', 80))}{path}"
        return f"http://127.0.0.1:{self.forwards[0][0]}{path}" if self.forwards else None

    @property
    def migration_port(self) -> int:
        return int(self.spec.params.get("migration_port", MIGRATION_PORT))

    def qemu_argv(self) -> list[str]:
        """qemu's command line (a migration target's adds ``-incoming``)."""
        p = self.spec.params
        argv = [
            QEMU,
            "-name", self.name,
            "-machine", f"pc,accel={self.accel}",
            "-m", str(p.get("memory", 128)),
            "-smp", str(p.get("vcpus", 1)),
            "-display", "none",
            "-no-reboot",  # a guest that reboots exits: the monitor sees it, the agent acts
            "-serial", f"file:{self.serial_log}",
            "-monitor", "none",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-drive", f"file={p['disk']},if=virtio,format={p.get('disk_format', 'raw')}",
        ]  # fmt: skip
        if p.get("kernel"):
            argv += ["-kernel", str(p["kernel"])]
            if p.get("initrd"):
                argv += ["-initrd", str(p["initrd"])]
            if p.get("append"):
                argv += ["-append", str(p["append"])]
        if p.get("tap"):
            # the node routes to the guest: its TCP connections live in the guest, and so
            # carry on across a live move (every node's tap and routes are alike)
            netdev = f"tap,id=net0,ifname={p['tap']},script=no,downscript=no"
        else:
            netdev = "user,id=net0"
            for host, guest in self.forwards:
                netdev += f",hostfwd=tcp::{host}-:{guest}"
        device = "virtio-net-pci,netdev=net0" + (f",mac={p['mac']}" if p.get("mac") else "")
        argv += ["-netdev", netdev, "-device", device]
        return argv

    def status(self, timeout: float) -> str | None:
        """qemu's run state (running, paused, shutdown, ...), or None if it does not answer."""
        try:
            reply = self.qmp_call(self.qmp_path, "query-status", timeout)
        except qmp.QmpError:
            self.last_state = None
            return None
        self.last_state = str(reply.get("status")) if isinstance(reply, dict) else None
        return self.last_state

    def state_note(self) -> str | None:
        """qemu's run state as the last QMP answer gave it; "booting" until the guest's
        service first answered."""
        if self.last_state == "running" and self.booting_since is not None:
            return "booting"
        return self.last_state

    def _unit_active(self, timeout: float) -> bool:
        result = self._run(["systemctl", "is-active", "--quiet", self.unit], timeout)
        if result.ok or result.rc in NOT_ACTIVE:
            return result.ok
        return True  # systemd said nothing: assume it may run (the safe side for a stop)

    # -- the contract ----------------------------------------------------------------------

    def _qmp(self, command: str, timeout: float, **arguments: Any) -> Any:
        try:
            return self.qmp_call(self.qmp_path, command, max(timeout, 0.01), **arguments)
        except qmp.QmpError as exc:
            raise ResourceError(str(exc)) from None

    def start(self, timeout: float) -> None:
        deadline = self.clock() + timeout
        if self.app is not None:
            self.app.reset()
        # QMP first: a live move's target resumes its guest without waiting for systemctl
        state = self.status(timeout / 2)
        if state == "paused":  # a live migration came in (or it was paused): resume it
            self._qmp("cont", max(0.01, deadline - self.clock()))
            self.last_state = "running"
            return
        if state == "inmigrate":
            # a migration that never completed (its holder died): its state is not whole
            log.warning("%s: an incoming migration never completed: booting afresh", self.name)
            self._kill(deadline)
        elif state is not None or self._unit_active(max(0.01, deadline - self.clock())):
            return  # running, or booting from an earlier start
        self._launch(deadline)
        self.booting_since = self.clock()

    def prepare_incoming(self, timeout: float) -> None:
        """Start qemu paused, waiting for a live migration on ``migration_port``."""
        deadline = self.clock() + timeout
        if not self._unit_active(timeout):
            self._launch(deadline, incoming=True)
        # qemu opens its QMP socket a moment after it starts
        while True:
            left = deadline - self.clock()
            state = self.status(max(0.01, min(left, 1.0)))
            if state is not None:
                break
            if left <= 0:
                raise ResourceError(f"the incoming qemu of {self.name} does not answer QMP")
            self.sleep(POLL)
        if state != "inmigrate":
            raise ResourceError(f"qemu of {self.name} runs here already ({state})")
        left = max(0.01, deadline - self.clock())
        capabilities = [{"capability": "late-block-activate", "state": True}]
        self._qmp("migrate-set-capabilities", left, capabilities=capabilities)
        try:
            self._qmp("migrate-incoming", left, uri=f"tcp:0.0.0.0:{self.migration_port}")
        except ResourceError as exc:
            if "already" not in str(exc).lower():  # listening since an earlier call
                raise

    def migrate_begin(self, address: str, timeout: float) -> None:
        self._qmp("migrate", timeout, uri=f"tcp:{address}:{self.migration_port}")

    def migrate_status(self, timeout: float) -> MigrationStatus:
        reply = self._qmp("query-migrate", timeout)
        if not isinstance(reply, dict):
            return MigrationStatus("none")
        total, downtime = reply.get("total-time"), reply.get("downtime")
        return MigrationStatus(
            str(reply.get("status", "none")),
            int(total) if isinstance(total, int) else None,
            int(downtime) if isinstance(downtime, int) else None,
            str(reply.get("error-desc") or ""),
        )

    def migrate_cancel(self, timeout: float) -> None:
        try:
            self._qmp("migrate_cancel", timeout)
            if self.status(timeout) == "postmigrate":
                # it completed before the cancel came: the target never resumed its copy (it
                # waits, paused and without the disk's lock, for the group), so the guest
                # goes on here
                self._qmp("cont", timeout)
        except ResourceError as exc:
            log.warning("%s: migrate_cancel: %s", self.name, exc)

    def _launch(self, deadline: float, incoming: bool = False) -> None:
        """Start qemu in its transient unit (booting, or paused for an incoming migration)."""
        disk = Path(str(self.spec.params["disk"]))
        if not disk.exists():
            raise ResourceError(f"disk {disk} is missing (is the shared storage mounted?)")
        if self.accel == "kvm" and not Path(self.kvm_device).exists():
            raise ResourceError(f"no KVM here ({self.kvm_device} is missing): use accel tcg")
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        Path(self.serial_log).parent.mkdir(parents=True, exist_ok=True)
        qemu = self.qemu_argv() + (["-S", "-incoming", "defer"] if incoming else [])
        argv = [
            "systemd-run", "--unit", self.unit, "--collect", "--quiet",
            "--property", "KillMode=mixed", "--", *qemu,
        ]  # fmt: skip
        self._run(["systemctl", "reset-failed", self.unit], max(0.01, deadline - self.clock()))
        self._check(argv, max(0.01, deadline - self.clock()))

    def monitor(self, timeout: float) -> bool:
        booting = self.booting_since is not None and (
            self.clock() - self.booting_since < float(self.spec.params.get("boot_timeout", 60))
        )
        state = self.status(timeout)
        if state != "running":
            if booting and state is None:
                return True  # qemu is still opening its socket
            log.warning("%s: qemu says %s", self.name, state or "nothing (not running)")
            return False
        if self.app is None:
            self.booting_since = None
            return True
        self.app.poll()
        if self.app.answered:
            self.booting_since = None  # booted: from now on failed checks count
        if booting or not self.app.failing:
            return True
        log.warning("%s: %s did not answer %d times", self.name, self.app.url, self.app.fall)
        return False

    def stop(self, timeout: float) -> None:
        deadline = self.clock() + timeout
        self.booting_since = None
        # QMP first: a live move's source learns in milliseconds that its copy ran out
        state = self.status(timeout * 0.2)
        if state is None and not self._unit_active(max(0.01, deadline - self.clock())):
            return
        if state == "postmigrate":
            # its guest runs on the migration's target now and it let go of the disk when
            # the migration completed (qemu inactivates the image): nothing of it may run
            # again, so the live move goes on without waiting for the process to end
            try:
                self.qmp_call(self.qmp_path, "quit", max(0.01, deadline - self.clock()))
            except qmp.QmpError:
                self._run(["systemctl", "kill", "--signal=KILL", self.unit], timeout)
            return
        if state == "running":
            # Most of the time for a clean ACPI power-off, the rest for the kill.
            graceful_until = self.clock() + timeout * 0.6
            try:
                self.qmp_call(self.qmp_path, "system_powerdown", max(0.01, timeout * 0.2))
                while self.clock() < graceful_until:
                    if not self._unit_active(max(0.01, deadline - self.clock())):
                        return
                    self.sleep(POLL)
            except qmp.QmpError as exc:
                log.warning("%s: no ACPI power-off (%s): killing it", self.name, exc)
        self._kill(deadline)

    def _kill(self, deadline: float) -> None:
        """SIGKILL qemu and wait until its unit is gone (its disk closed)."""
        left = max(0.01, deadline - self.clock())
        self._run(["systemctl", "kill", "--signal=KILL", self.unit], left)
        while True:
            left = deadline - self.clock()
            if not self._unit_active(max(0.01, left)):
                return
            if left <= 0:
                raise ResourceError(f"qemu of {self.name} still runs after SIGKILL")
            self.sleep(POLL)
