"""The REAL agent API (clusterctl/agent/api.py) over a simulated cluster, for the module tests.

Three simulated agents (in-memory store, fake clock, fake nodes: tests/unit/agent/agentsim.py)
step in a thread of their own at about real time, so a move asked through the API completes as
on a cluster; node1's agent serves the API on 127.0.0.1. In front of it a small proxy records
every request that got past the token check, so a test can say "no write was sent".
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clusterctl.agent.api import Api, ApiServer
from clusterctl.agent.store.memory import MemoryStore
from tests.unit.agent.agentsim import Sim

TOKEN = "sim-token-0123456789"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STEP = 0.05  # seconds of the fake clock per step of the agents' thread (and of real time)


class SimAgentApi:
    """``with SimAgentApi() as agent:``; ``agent.url`` is the API's base URL (the proxy's)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.sim = Sim()
        self.sim.run(1.0)
        self.api = Api(self.sim.agents["node1"], token, MemoryStore(self.sim.backend, "api"))
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

    # -- the recording proxy -----------------------------------------------------------------

    def _proxy_handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
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
