"""The sandbox's fence device: the host side of Debian's ``fence_docker`` agent.

A node that must fence another runs a real fence agent from Debian's fence-agents —
``fence_docker`` here, exactly as it would run ``fence_ipmilan`` against a BMC — and this
service is the "power switch" it talks to. It answers the five calls of the Docker Engine API
that fence_docker makes (ping, list, status, kill, start, restart), only for the cluster's own
node containers addressed by node name, and only to clients holding a certificate of the
cluster's CA (TLS both ways). It can run, create or inspect nothing else on the host: least
privilege, the shape of fence_virtd, rather than podman's whole API.

Power off must leave no instruction of the node run after it. A frozen node (podman pause)
killed the plain way would wake with its init dying and its other processes running until the
kernel reaches them; so every process of the container (its PID namespace, and every
descendant of its init) gets SIGKILL from the host while frozen, and only then is the
container thawed, to exit.

Every action is appended to the cluster's fence log in the state directory: when, which
client certificate asked, what, for which node, the result.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from clusterctl.agent.tls import TlsFiles
from clusterctl.errors import ClusterctlError
from clusterctl.state import ClusterRecord, StateDir, write_private

FENCE_PORT = 7491
OFF_TIMEOUT = 20.0  # seconds for a container to be gone after the kill
RUNNING_STATES = ("running", "paused")


class Containers(Protocol):
    """Power control of containers by name (PodmanContainers; a fake in the unit tests)."""

    def state(self, name: str) -> str:
        """podman's state (running, paused, exited, ...); raises LookupError if missing."""
        ...

    def off(self, name: str, timeout: float) -> None:
        """Kill every process of the container (frozen or not) and wait until it is gone."""
        ...

    def on(self, name: str, timeout: float) -> None: ...


class PodmanContainers:
    """The host's podman, with clusterctl's private configuration."""

    def __init__(self, podman: Any) -> None:
        self.podman = podman  # clusterctl.providers.podman_cli.Podman

    def _inspect(self, name: str, field: str) -> str:
        """One field of the container's state; LookupError if there is no such container."""
        proc = self.podman.run(
            "container", "inspect", "--format", f"{{{{.State.{field}}}}}", name,
            check=False, timeout=20,
        )  # fmt: skip
        if proc.returncode != 0:
            raise LookupError(name)
        return proc.stdout.strip()

    def state(self, name: str) -> str:
        return self._inspect(name, "Status")

    def _init_pid(self, name: str) -> int:
        try:
            return int(self._inspect(name, "Pid"))
        except (LookupError, ValueError):
            return 0

    def off(self, name: str, timeout: float) -> None:
        state = self.state(name)
        if state not in RUNNING_STATES:
            return
        init = self._init_pid(name)
        if init > 0:
            kill_all(container_processes(init))
        if state == "paused":
            self.podman.run("unpause", name, check=False, timeout=timeout)
        # init is dead (or never was): podman records the exit; a kill through podman covers
        # a container whose init PID could not be read
        deadline = time.monotonic() + timeout
        while self.state(name) in RUNNING_STATES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} still {self.state(name)} after {timeout:.0f} s")
            self.podman.run("kill", name, check=False, timeout=timeout)
            time.sleep(0.1)

    def on(self, name: str, timeout: float) -> None:
        if self.state(name) not in RUNNING_STATES:
            self.podman.run("start", name, timeout=timeout)


def container_processes(init: int, proc: Path = Path("/proc")) -> set[int]:
    """Host PIDs of a container: ``init``, every process in its PID namespace (``podman
    exec`` ones are not init's descendants) and every descendant of init (a nested namespace's
    processes are not in init's namespace)."""
    try:
        ns = os.stat(proc / str(init) / "ns" / "pid")
    except OSError:
        return set()
    parents: dict[int, int] = {}
    found = {init}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            mine = os.stat(entry / "ns" / "pid")
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        if (mine.st_ino, mine.st_dev) == (ns.st_ino, ns.st_dev):
            found.add(pid)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class FenceService:
    """The device's logic, HTTP aside: ``nodes`` maps node names to container names."""

    nodes: Mapping[str, str]
    containers: Containers
    log_path: Path
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # one power action at a time

    def handle(self, method: str, path: str, client: str) -> tuple[int, Any]:
        """(HTTP status, JSON body or None) for one Docker API request."""
        parts = [p for p in path.split("?", 1)[0].split("/") if p]
        if parts and parts[0].startswith("v") and parts[0][1:].replace(".", "").isdigit():
            parts = parts[1:]  # /v1.11/... : every API version is the same few calls here
        if method == "GET" and parts == ["_ping"]:
            return 200, "OK"
        if method == "GET" and parts == ["containers", "json"]:
            return 200, [self._summary(node) for node in sorted(self.nodes)]
        if len(parts) != 3 or parts[0] != "containers":
            return 404, {"message": "not a call this fence device answers"}
        _, node, action = parts
        if node not in self.nodes:
            return 404, {"message": f"no such node: {node}"}
        if method == "GET" and action == "json":
            running, state = self._running(node)
            return 200, {"Id": node, "Name": f"/{node}", "State": {"Running": running,
                                                                 "Status": state}}  # fmt: skip
        if method != "POST" or action not in ("kill", "start", "restart"):
            return 404, {"message": f"no such call: {method} {action}"}
        with self._lock:
            return self._power(node, action, client)

    def _running(self, node: str) -> tuple[bool, str]:
        try:
            state = self.containers.state(self.nodes[node])
        except LookupError:
            return False, "missing"
        return state in RUNNING_STATES, state

    def _summary(self, node: str) -> dict[str, Any]:
        running, state = self._running(node)
        return {"Id": node, "Names": [f"/{node}"], "Status": "Up" if running else f"Exited {state}"}

    def _power(self, node: str, action: str, client: str) -> tuple[int, Any]:
        container = self.nodes[node]
        began = self.clock()
        try:
            if action in ("kill", "restart"):
                self.containers.off(container, OFF_TIMEOUT)
            if action in ("start", "restart"):
                self.containers.on(container, OFF_TIMEOUT)
            result, status, body = "ok", 204, None
        except (LookupError, TimeoutError, OSError) as exc:
            result, status, body = f"failed: {exc}", 500, {"message": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a podman error must be reported, not crash
            result, status, body = f"failed: {exc}", 500, {"message": str(exc)}
        self._audit(began, client, action, node, result)
        return status, body

    def _audit(self, at: float, client: str, action: str, node: str, result: str) -> None:
        line = json.dumps(
            {
                "at": at,
                "took": round(self.clock() - at, 3),
                "client": client,
                "action": action,
                "node": node,
                "result": result,
            }  # fmt: skip
        )
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as log:
            log.write(line + "\n")


def client_name(sock: ssl.SSLSocket) -> str:
    """The organizational unit of the client's certificate: the node (or controller) name."""
    cert = sock.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "organizationalUnitName":
                return str(value)
    return "?"


def make_server(
    service: FenceService, address: str, port: int, context: ssl.SSLContext
) -> ThreadingHTTPServer:
    """The HTTPS server; ``context`` must require client certificates of the cluster's CA."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "clusterctl-fenced"
        timeout = 10  # seconds a client may take to send its request

        def log_message(self, *args: object) -> None:
            pass  # every power action is in the fence log

        def _answer(self, method: str) -> None:
            status, body = service.handle(method, self.path, client_name(self.connection))
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's names
            self._answer("GET")

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 65536))
            self._answer("POST")

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    # the handshake happens in the request's thread: a slow or bad client holds up no other
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    return server


# --- the daemon and its life (`clusterctl up` starts it, `down` stops it) ---------------------


class RecordNodes(Mapping[str, str]):
    """Node name -> container, read from the cluster's record on every look, so nodes added
    or removed by `clusterctl scale` are known without a restart."""

    def __init__(self, record_file: Path) -> None:
        self.record_file = record_file

    def _nodes(self) -> dict[str, str]:
        try:
            record = ClusterRecord.from_json(self.record_file.read_text())
        except (OSError, ValueError, TypeError):
            return {}
        return {n.name: n.container for n in record.nodes if n.container}

    def __getitem__(self, node: str) -> str:
        return self._nodes()[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes())

    def __len__(self) -> int:
        return len(self._nodes())


def pid_file(state: StateDir) -> Path:
    return state.path / "fenced.pid"


def running_pid(state: StateDir) -> int | None:
    """The PID of this cluster's fence device, if one runs (checked by its command line)."""
    try:
        pid = int(pid_file(state).read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if b"clusterctl.fenced" in argv and state.cluster.encode() in argv:
        return pid
    return None


def start(state: StateDir, address: str, port: int = FENCE_PORT, wait: float = 10.0) -> bool:
    """Start the cluster's fence device on ``address`` unless it runs; True if started.

    It is a process of the controller, not a service: after a reboot of this host the next
    `clusterctl up` starts it again (until then groups that need fencing cannot be recovered,
    which is the safe side)."""
    if running_pid(state) is not None:
        return False
    log = os.open(state.path / "fenced.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clusterctl.fenced", "--cluster", state.cluster,
             "--state-root", str(state.root), "--listen", f"{address}:{port}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(log)
    write_private(pid_file(state), f"{proc.pid}\n")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterctlError(
                f"the fence device exited at start (exit {proc.returncode})",
                f"see {state.path / 'fenced.log'}",
            )
        with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5):
            return True
        time.sleep(0.1)
    proc.kill()
    raise ClusterctlError(
        f"the fence device did not listen on {address}:{port} within {wait:.0f} s",
        f"see {state.path / 'fenced.log'}",
    )


def stop(state: StateDir, wait: float = 10.0) -> bool:
    """Stop the cluster's fence device if it runs; True if it did."""
    pid = running_pid(state)
    pid_file(state).unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return True


def main(argv: list[str] | None = None) -> int:
    import argparse

    from clusterctl.pki import ClusterCA
    from clusterctl.providers.podman_cli import Podman

    parser = argparse.ArgumentParser(prog="python -m clusterctl.fenced")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--state-root", required=True, type=Path)
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT")
    args = parser.parse_args(argv)
    state = StateDir(args.cluster, args.state_root)
    address, _, port = args.listen.rpartition(":")
    ca = ClusterCA(state.pki_dir, args.cluster)
    cert, key = ca.fence_device_paths()
    context = TlsFiles(str(ca.ca_cert), str(cert), str(key)).server_context()
    service = FenceService(
        RecordNodes(state.record_file),
        PodmanContainers(Podman(args.state_root)),
        state.path / "fence-log",
    )
    server = make_server(service, address, int(port), context)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"fence device of {args.cluster} on {args.listen}", flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
