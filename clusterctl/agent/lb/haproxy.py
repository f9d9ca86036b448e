"""Engine ``haproxy``: a rendered haproxy.cfg plus HAProxy's runtime API (HAProxy 2.6).

Split of responsibilities: the *structure* (frontend, checks, algorithm, the set of servers
and their addresses) lives in the config file and changes only through a reload; *weights and
states* (ready/drain/maint) change through the runtime API without dropping anything. A reload
resets runtime changes to what the config says, which is why the config is always rendered
from the desired state too, and why ``apply`` compares the desired state (from etcd) with what
``show servers state`` reports on every call: whatever restarted HAProxy, the next ``apply``
puts the runtime state back.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from clusterctl.agent.lb.command import LbError, check
from clusterctl.agent.lb.model import Backend, BackendCounters, LbSpec
from clusterctl.agent.resources.runner import CommandRunner

FRONTEND = "fe_clusterctl"
BACKEND = "be_clusterctl"
SOCKET_PATH = "/run/haproxy/admin.sock"
CONFIG_PATH = "/etc/haproxy/haproxy.cfg"
_STRUCTURE_TAG = "# clusterctl-structure: "

# srv_admin_state bits (HAProxy include/haproxy/server-t.h). CMAINT (0x04, "disabled in the
# config") is deliberately absent: it stays set after `set server state ready` although the
# server is then serving, so only the forced bits say what the runtime state is.
ADMF_FMAINT = 0x01
ADMF_FDRAIN = 0x08
_ADMF_MAINT_MASK = 0x23  # FMAINT | IMAINT | RMAINT
_ADMF_DRAIN_MASK = 0x18  # FDRAIN | IDRAIN

# Backend.state -> the runtime API's word for it.
RUNTIME_STATE = {"active": "ready", "draining": "drain", "disabled": "maint"}


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _server_line(spec: LbSpec, b: Backend) -> str:
    # A draining server gets weight 0 in the file: if HAProxy reloads before the runtime API
    # can say "drain", it still receives no new connection.
    weight = 0 if b.state == "draining" else b.weight
    line = (
        f"\tserver {b.node} {b.address}:{b.port} check inter {_ms(spec.inter)} "
        f"rise {spec.rise} fall {spec.fall} weight {weight}"
    )
    return line + (" disabled" if b.state == "disabled" else "")


def _body(spec: LbSpec, backends: Sequence[Backend], socket_path: str) -> list[str]:
    log_option = "httplog" if spec.mode == "http" else "tcplog"
    lines = [
        "global",
        "\tlog /dev/log local0",
        f"\tstats socket {socket_path} mode 660 level admin expose-fd listeners",
        "\tstats timeout 30s",
        "\tuser haproxy",
        "\tgroup haproxy",
        "\tdaemon",
        "",
        "defaults",
        "\tlog global",
        f"\tmode {spec.mode}",
        f"\toption {log_option}",
        "\toption dontlognull",
        # Retry a failed connect, then redispatch it to another server rather than failing.
        "\tretries 3",
        "\toption redispatch",
        "\ttimeout connect 5s",
        "\ttimeout client 50s",
        "\ttimeout server 50s",
        f"\ttimeout check {_ms(spec.check_timeout)}",
        "",
        f"frontend {FRONTEND}",
        f"\tbind {spec.address}:{spec.port}",
        f"\tdefault_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        f"\tbalance {spec.algorithm}",
    ]
    if spec.algorithm == "source":
        # The default map-based hash is static: the runtime API then only accepts weights
        # 0% and 100%. Consistent hashing is dynamic and also moves fewer clients on change.
        lines.append("\thash-type consistent")
    # The backends are web servers, so even in tcp mode an HTTP check is the meaningful one.
    lines += [
        f"\toption httpchk GET {spec.check_path}",
        f"\thttp-check expect status {spec.expected_status}",
    ]
    lines += [_server_line(spec, b) for b in sorted(backends, key=lambda b: b.node)]
    return lines


def structure_hash(spec: LbSpec, backends: Sequence[Backend], socket_path: str) -> str:
    """A digest of everything that needs a reload to change: the config with every server's
    weight and state normalized away."""
    neutral = [replace(b, weight=1, state="active") for b in backends]
    text = "\n".join(_body(spec, neutral, socket_path))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render_config(spec: LbSpec, backends: Sequence[Backend], socket_path: str = SOCKET_PATH) -> str:
    """The complete haproxy.cfg for ``spec`` over every registered backend (HAProxy does its
    own health checks, so unhealthy ones are listed too; disabled ones as ``disabled``)."""
    header = [
        "# clusterctl load balancer. Generated: do not edit.",
        _STRUCTURE_TAG + structure_hash(spec, backends, socket_path),
    ]
    return "\n".join(header + _body(spec, backends, socket_path)) + "\n"


# -- runtime API -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerState:
    """One line of ``show servers state``."""

    backend: str
    name: str
    address: str
    port: int
    op_state: int  # 0 stopped, 1 starting, 2 running, 3 stopping
    admin_state: int  # bit mask, see ADMF_*
    weight: int  # srv_uweight: the user weight the runtime API sets

    @property
    def runtime_state(self) -> str:
        """``maint``, ``drain`` or ``ready``: the admin state as the runtime API names it."""
        if self.admin_state & _ADMF_MAINT_MASK:
            return "maint"
        if self.admin_state & _ADMF_DRAIN_MASK:
            return "drain"
        return "ready"


@dataclass(frozen=True)
class ServerStat:
    """The parts of one ``show stat`` server row the LB needs."""

    backend: str
    name: str
    status: str  # UP, DOWN, MAINT, DRAIN, "UP 1/3", ...
    sessions: int  # scur: current sessions
    weight: int


def stat_health(status: str) -> str:
    """``up``, ``down`` or ``unknown`` from a ``show stat`` status: HAProxy's own checks.
    ``UP``, ``UP 1/2`` (failing, not yet ``fall`` times), ``DRAIN`` and ``NOLB`` are up;
    ``DOWN`` and ``DOWN 1/2`` (recovering, not yet ``rise`` times) are down; ``MAINT`` (not
    checked) and ``no check`` are unknown."""
    word = status.split(" ", 1)[0].upper()
    if word in ("UP", "DRAIN", "NOLB"):
        return "up"
    if word == "DOWN":
        return "down"
    return "unknown"


def parse_servers_state(text: str) -> list[ServerState]:
    """Parse ``show servers state`` (format version 1: a version line, a ``#`` header naming
    the columns, then one space-separated line per server). Columns are found by name."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header: list[str] | None = None
    out: list[ServerState] = []
    for line in lines:
        if line.startswith("#"):
            header = line.lstrip("#").split()
            continue
        if header is None:
            continue  # the version line
        values = dict(zip(header, line.split(), strict=False))
        try:
            out.append(
                ServerState(
                    backend=values["be_name"],
                    name=values["srv_name"],
                    address=values["srv_addr"],
                    port=int(values.get("srv_port", "0")),
                    op_state=int(values["srv_op_state"]),
                    admin_state=int(values["srv_admin_state"]),
                    weight=int(values["srv_uweight"]),
                )
            )
        except (KeyError, ValueError) as exc:
            raise LbError(f"unparsable 'show servers state' line {line!r}: {exc}") from None
    return out


def parse_stat(text: str) -> list[ServerStat]:
    """Parse ``show stat`` CSV (header ``# pxname,svname,...``); server rows only."""
    header: list[str] | None = None
    out: list[ServerStat] = []
    for line in text.splitlines():
        if line.startswith("#"):
            header = line.lstrip("# ").rstrip(",").split(",")
            continue
        if header is None or not line.strip():
            continue
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname") in ("FRONTEND", "BACKEND", None):
            continue
        out.append(
            ServerStat(
                backend=row.get("pxname", ""),
                name=row["svname"],
                status=row.get("status", ""),
                sessions=int(row.get("scur") or 0),
                weight=int(row.get("weight") or 0),
            )
        )
    return out


class HaproxyRuntime:
    """A client of HAProxy's runtime API over its UNIX socket: one connection per command
    (non-interactive mode: HAProxy answers and closes). Raises ``LbError`` when the socket
    does not answer within ``timeout`` or a ``set`` command is refused."""

    def __init__(self, socket_path: str = SOCKET_PATH, timeout: float = 1.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def command(self, line: str) -> str:
        """Send one command; return HAProxy's whole answer."""
        if "\n" in line or ";" in line:
            raise ValueError(f"one command per call, got {line!r}")
        chunks: list[bytes] = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(line.encode() + b"\n")
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise LbError(f"haproxy runtime API {self.socket_path}: {line!r}: {exc}") from None
        return b"".join(chunks).decode(errors="replace")

    def _set(self, line: str) -> None:
        # Successful `set server` commands answer nothing (an empty line); anything else is
        # HAProxy's error message, e.g. "No such server." or a static-algorithm refusal.
        answer = self.command(line).strip()
        if answer:
            raise LbError(f"haproxy refused {line!r}: {answer.splitlines()[0]}")

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        self._set(f"set server {backend}/{server} weight {int(weight)}")

    def set_state(self, backend: str, server: str, state: str) -> None:
        """``state``: ``ready``, ``drain`` or ``maint``."""
        if state not in ("ready", "drain", "maint"):
            raise ValueError(f"unknown server state {state!r}")
        self._set(f"set server {backend}/{server} state {state}")

    def servers_state(self, backend: str | None = None) -> list[ServerState]:
        answer = self.command("show servers state" + (f" {backend}" if backend else ""))
        return [s for s in parse_servers_state(answer) if backend is None or s.backend == backend]

    def stats(self, backend: str | None = None) -> list[ServerStat]:
        answer = self.command("show stat")
        return [s for s in parse_stat(answer) if backend is None or s.backend == backend]


# -- engine ----------------------------------------------------------------------------------


def runtime_commands(
    backends: Sequence[Backend], actual: Sequence[ServerState]
) -> list[tuple[str, str, str | int]]:
    """The runtime changes that bring ``actual`` to the desired ``backends``:
    ``(server, "weight", N)`` and ``(server, "state", word)``, weight before state so a
    server coming back becomes ready with its final weight. Weights are only compared for
    active backends (drain and maint already mean "no new connection")."""
    by_name = {s.name: s for s in actual}
    out: list[tuple[str, str, str | int]] = []
    for b in sorted(backends, key=lambda b: b.node):
        now = by_name.get(b.node)
        if now is None:
            continue  # not in the running config: a reload's job, not the runtime API's
        want = RUNTIME_STATE[b.state]
        if b.state == "active" and now.weight != b.weight:
            out.append((b.node, "weight", b.weight))
        if now.runtime_state != want:
            out.append((b.node, "state", want))
    return out


class HaproxyEngine:
    """Keeps HAProxy in line with ``spec`` and the registered backends.

    ``apply`` writes ``config_path`` whenever the rendered text differs (after ``haproxy -c``
    accepts it), so a restart by anyone starts from the desired state. It reloads (``systemctl
    reload-or-restart haproxy``, which also starts a stopped HAProxy) when the structure
    changed or the running server set differs from the desired one; otherwise it only sends
    runtime commands for the differences. After a reload it leaves HAProxy ``reload_grace``
    seconds before treating an unanswering socket as a reason to reload again.
    """

    checks_backends = True  # HAProxy's own checks; it gets every registered backend

    def __init__(
        self,
        runner: CommandRunner,
        config_path: str = CONFIG_PATH,
        socket_path: str = SOCKET_PATH,
        runtime: HaproxyRuntime | None = None,
        timeout: float = 10.0,
        validate: bool = True,
        reload_grace: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner
        self.config_path = Path(config_path)
        self.socket_path = socket_path
        self.runtime = runtime or HaproxyRuntime(socket_path)
        self.timeout = timeout
        self.validate = validate
        self.reload_grace = reload_grace
        self.clock = clock
        self._reloaded_at: float | None = None
        # Set when the structure on disk changed and no reload has succeeded since: the file
        # then already matches, so only this flag remembers that HAProxy runs an older one.
        self._reload_pending = False

    def apply(self, spec: LbSpec, backends: Sequence[Backend]) -> list[str]:
        """Converge; return the actions taken (for the log; empty when nothing differed).
        Raises ``LbError`` if the config is rejected, a reload fails, or HAProxy refuses a
        runtime command."""
        actions: list[str] = []
        text = render_config(spec, backends, self.socket_path)
        wanted = structure_hash(spec, backends, self.socket_path)
        on_disk = self._read_config()
        if on_disk != text:
            self._write_config(text)
            actions.append(f"write {self.config_path}")
        try:
            actual: list[ServerState] | None = self.runtime.servers_state(BACKEND)
        except LbError:
            actual = None
        servers = {(b.node, b.address, b.port) for b in backends}
        running = None if actual is None else {(s.name, s.address, s.port) for s in actual}
        if on_disk is None or _structure_of(on_disk) != wanted:
            self._reload_pending = True
        structure_changed = self._reload_pending
        if structure_changed or running != servers:
            in_grace = (
                self._reloaded_at is not None
                and self.clock() - self._reloaded_at < self.reload_grace
            )
            if in_grace and not structure_changed:
                # The new worker may not be serving the socket yet: wait, don't reload again.
                return actions + ["wait for reload"]
            argv = ["systemctl", "reload-or-restart", "haproxy"]
            check(self.runner.run(argv, self.timeout), argv)
            self._reloaded_at = self.clock()
            self._reload_pending = False
            return actions + ["reload"]
        assert actual is not None  # running == servers, so the socket answered
        for server, what, value in runtime_commands(backends, actual):
            if what == "weight":
                self.runtime.set_weight(BACKEND, server, int(value))
            else:
                self.runtime.set_state(BACKEND, server, str(value))
            actions.append(f"set server {BACKEND}/{server} {what} {value}")
        return actions

    def converge(
        self, spec: LbSpec, registered: Sequence[Backend], live: Sequence[Backend]
    ) -> None:
        self.apply(spec, registered)

    def in_place(self, timeout: float | None = None) -> bool:
        argv = ["systemctl", "is-active", "--quiet", "haproxy"]
        return self.runner.run(argv, max(self.timeout if timeout is None else timeout, 0.01)).ok

    def counters(
        self, spec: LbSpec, backends: Sequence[Backend], timeout: float
    ) -> dict[str, BackendCounters]:
        # One `show stat` gives every server's sessions and HAProxy's own check result.
        servers = self.server_stats()
        counts: dict[str, BackendCounters] = {}
        for b in backends:
            stat = servers.get(b.node)
            counts[b.node] = BackendCounters(
                stat.sessions if stat else 0, stat_health(stat.status) if stat else None
            )
        return counts

    def remove(self, timeout: float | None = None) -> None:
        """Stop HAProxy. No reload is in flight afterwards, so the next ``apply`` must start
        it at once: without forgetting the last reload, a stop and start within
        ``reload_grace`` (a restart in place, a quick move back) only "waited for the
        reload", the monitor found HAProxy stopped, and each try cost a fail count."""
        argv = ["systemctl", "stop", "haproxy"]
        check(self.runner.run(argv, max(self.timeout if timeout is None else timeout, 0.01)), argv)
        self._reloaded_at = None

    def server_stats(self) -> dict[str, ServerStat]:
        """``show stat`` of every server of the backend, by name (one runtime API call)."""
        return {s.name: s for s in self.runtime.stats(BACKEND)}

    def _read_config(self) -> str | None:
        try:
            return self.config_path.read_text()
        except OSError:
            return None

    def _write_config(self, text: str) -> None:
        # Write a sibling temp file, have HAProxy check it, then rename: the live file is
        # never half-written, and never replaced by one HAProxy would refuse on reload.
        directory = self.config_path.parent
        fd, tmp = tempfile.mkstemp(prefix=".haproxy.", suffix=".cfg", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            if self.validate:
                argv = ["haproxy", "-c", "-q", "-f", tmp]
                check(self.runner.run(argv, self.timeout), argv)
            os.replace(tmp, self.config_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _structure_of(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(_STRUCTURE_TAG):
            return line[len(_STRUCTURE_TAG) :].strip()
    return None
