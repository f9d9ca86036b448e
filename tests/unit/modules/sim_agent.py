"""The REAL agent API (clusterctl/agent/api.py) over a simulated cluster, for the module tests.

Three simulated agents (in-memory store, fake clock, fake nodes: tests/unit/agent/agentsim.py)
step in a thread of their own at about real time, so a move asked through the API completes as
on a cluster; node1's agent serves the API on 127.0.0.1. In front of it a small proxy records
every request that got past the token check, so a test can say "no write was sent".

With ``lb=True`` the group also has a load balancer: its spec is published with an ``lb``
resource and every node is registered as a backend (the keys the agents write), so the
backend endpoints are the real ones over the real registry. Only the live counts the holder's
load balancer reports (health, active connections) come from ``SimBackendCounts``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clusterctl.agent.api import Api, ApiServer
from clusterctl.agent.config import ResourceSpec
from clusterctl.agent.lb.model import Backend
from clusterctl.agent.resources.lb import BackendStats
from clusterctl.agent.store.memory import MemoryStore
from tests.unit.agent.agentsim import Sim, web_group

TOKEN = "sim-token-0123456789"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STEP = 0.05  # seconds of the fake clock per step of the agents' thread (and of real time)
LB_PARAMS = {"address": "10.0.0.100", "port": 80, "backend_port": 8080}


class SimBackendCounts:
    """What the holder's load balancer reports of its backends: every backend up, with
    ``connections[node]`` active connections (0 unless set). A draining backend's count drops
    by ``drain_per_read`` on each ``GET /v1/backends``, as its clients finish."""

    def __init__(self, store: MemoryStore, keys: Any) -> None:
        self.store = store
        self.keys = keys
        self.connections: dict[str, int] = {}
        self.drain_per_read = 1

    def stats(self) -> tuple[BackendStats, ...]:
        rows = []
        for backend in self._registered():
            count = self.connections.get(backend.node, 0)
            rows.append(
                BackendStats(
                    node=backend.node,
                    address=backend.address,
                    port=backend.port,
                    weight=backend.weight,
                    state=backend.state,
                    health="up",
                    active_connections=count,
                    in_rotation=backend.state == "active" and backend.weight > 0,
                )
            )
        return tuple(rows)

    def drain(self) -> None:
        for backend in self._registered():
            if backend.state == "draining":
                count = self.connections.get(backend.node, 0)
                self.connections[backend.node] = max(0, count - self.drain_per_read)

    def _registered(self) -> list[Backend]:
        prefix = self.keys.backends_prefix()
        found = sorted(self.store.get_prefix(prefix).items())
        return [Backend.from_json(key[len(prefix) :], text) for key, text in found]


class SimAgentApi:
    """``with SimAgentApi() as agent:``; ``agent.url`` is the API's base URL (the proxy's)."""

    def __init__(self, token: str = TOKEN, lb: bool = False) -> None:
        self.token = token
        self.sim = Sim()
        self.store = MemoryStore(self.sim.backend, "api")
        self.counts: SimBackendCounts | None = None
        self.sim.run(1.0)
        if lb:
            self._add_load_balancer()
        self.api = Api(self.sim.agents["node1"], token, self.store)
        # a hook run on each authorised request before it reaches the API
        self.before_request: Any = None
        self.server = ApiServer(self.api, "127.0.0.1", 0)
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, body), authorised
        self.paused = threading.Event()  # set: the agents stop stepping (nothing completes)
        self.failure: BaseException | None = None  # the simulation's, raised at exit
        self._stop = threading.Event()
        self._stepper = threading.Thread(target=self._step, name="sim-agents", daemon=True)
        self.proxy = ThreadingHTTPServer(("127.0.0.1", 0), self._proxy_handler())
        self.proxy.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.proxy.server_address[1]}"
        self._proxy_thread = threading.Thread(target=self.proxy.serve_forever, daemon=True)

    def _add_load_balancer(self) -> None:
        """Publish the group with an lb resource (after the agents published theirs, which
        they do once per start) and register each node as a backend; node1's agent reports
        ``self.counts``."""
        keys = self.sim.keys
        web = web_group()
        spec = replace(web, resources=(*web.resources, ResourceSpec("lb", "lb", dict(LB_PARAMS))))
        self.store.put(keys.spec(spec.name), spec.to_json())
        for index, node in enumerate(self.sim.nodes):
            backend = Backend(node, f"10.0.0.{11 + index}", LB_PARAMS["backend_port"], 100)
            self.store.put(keys.backend(node), backend.to_json())
        self.counts = SimBackendCounts(self.store, keys)
        self.sim.agents["node1"].lb_stats = self.counts.stats  # type: ignore[method-assign]

    # -- life -------------------------------------------------------------------------------

    def __enter__(self) -> SimAgentApi:
        self.server.start()
        self._stepper.start()
        self._proxy_thread.start()
        if self.group()["node"] != "node1":  # every test starts there
            self.call("POST", "/v1/groups/web/move", {"to": "node1"})
        self.wait(lambda: self.group()["node"] == "node1" and self.group()["state"] == "started")
        self.requests.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._stepper.join(5)
        self.proxy.shutdown()
        self.proxy.server_close()
        self.server.stop()
        if self.failure is not None and exc[0] is None:
            raise self.failure

    def _step(self) -> None:
        while not self._stop.wait(STEP):
            if self.paused.is_set():
                continue
            try:
                self.sim.run(STEP)  # checks the safety invariant after every agent's step
            except BaseException as exc:  # noqa: BLE001 - reported at exit
                self.failure = exc
                return

    # -- what the tests look at ----------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request straight to the API (not through the recording proxy)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server.url + path, data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with _OPENER.open(request, timeout=5) as response:
            return json.loads(response.read() or b"{}")

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/v1/status")

    def group(self, name: str = "web") -> dict[str, Any]:
        return next(g for g in self.status()["groups"] if g["name"] == name)

    def wait(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {predicate}")
            time.sleep(0.05)

    def set_failcount(self, node: str, count: int, group: str = "web") -> None:
        """What an agent writes after its resources failed there ``count`` times."""
        self.api.store.put(self.api.agent.keys.failcount(group, node), str(count))

    def writes(self) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[0] in ("POST", "DELETE")]

    def status_reads(self) -> int:
        return sum(1 for r in self.requests if r[:2] == ("GET", "/v1/status"))

    def backend_reads(self) -> int:
        return sum(1 for r in self.requests if r[:2] == ("GET", "/v1/backends"))

    def backend(self, node: str) -> dict[str, Any] | None:
        """The backend's registration (weight, state, ...) in the store, or None."""
        text = self.store.get(self.sim.keys.backend(node))
        return None if text is None else asdict(Backend.from_json(node, text))

    # -- the recording proxy -----------------------------------------------------------------

    def _proxy_handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                if agent.before_request is not None:
                    agent.before_request(method, self.path)
                if agent.counts is not None and (method, self.path) == ("GET", "/v1/backends"):
                    agent.counts.drain()
                request = urllib.request.Request(agent.server.url + self.path, data, method=method)
                for name in ("Authorization", "Content-Type", "Accept"):
                    if self.headers.get(name):
                        request.add_header(name, self.headers[name])
                try:
                    with _OPENER.open(request, timeout=10) as response:
                        status, payload = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                if status != 401:
                    body = json.loads(data) if data else None
                    agent.requests.append((method, self.path, body))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                self._forward("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._forward("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._forward("DELETE")

        return Handler
