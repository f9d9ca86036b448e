"""A FAKE clusterctl agent API, left for the backend module's tests only (the simulated cluster
of sim_agent.py, which the other module tests use with the real API, has no load balancer): a
real HTTP server on 127.0.0.1:<free port>, serving the endpoints of docs/agent-api.md over an
in-memory dict. It is not the agent:
moves are applied ``move_delay`` seconds after they are asked for (on the next status read),
which is enough to make the modules poll. Load balancer backends live in ``fake.lb``; each
GET /v1/backends lowers a draining backend's ``active_connections`` by ``drain_per_read``.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "fake-token-0123456789"


BACKEND_STATES = ("active", "draining", "disabled")


def initial_lb():
    return {
        "group": "web",
        "holder": "node1",
        "engine": "nft",
        "backends": {
            n: {
                "address": f"10.0.0.1{i}",
                "port": 8080,
                "weight": 100,
                "state": "active",
                "health": "up",
                "active_connections": 0,
                "in_rotation": True,
            }
            for i, n in enumerate(["node1", "node2", "node3"], start=1)
        },
    }


def initial_cluster():
    return {
        "cluster": "fake",
        "node": "node1",
        "quorum": True,
        "sentence": "fake cluster",
        "members": [
            {"name": n, "address": f"10.0.0.1{i}", "online": True, "standby": False}
            for i, n in enumerate(["node1", "node2", "node3"], start=1)
        ],
        "groups": [
            {
                "name": "web",
                "vip": "10.0.0.100",
                "node": "node1",
                "state": "started",
                "failcounts": {"node1": 0},
                "bans": [],
                "move": None,
                "migration_threshold": 3,
            }
        ],
    }


class FakeAgentApi:
    """Start with ``with FakeAgentApi() as fake:``; ``fake.url`` is its base URL."""

    def __init__(self, token=TOKEN, move_delay=0.5):
        self.token = token
        self.move_delay = move_delay
        self.cluster = initial_cluster()
        self.lb = initial_lb()  # "backends": {node: row}; set self.lb = None for "no LB" (404)
        self.drain_per_read = 1
        self.requests: list[tuple[str, str, object]] = []  # (method, path, body), authorised
        self.due: dict[str, float] = {}  # group -> time its pending move completes
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake._handle(self, "GET")

            def do_POST(self):
                fake._handle(self, "POST")

            def do_DELETE(self):
                fake._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # --- helpers for tests ---------------------------------------------------------------

    def group(self, name="web"):
        with self.lock:
            self._settle()
            return copy.deepcopy(self._group(name))

    def writes(self):
        return [r for r in self.requests if r[0] in ("POST", "DELETE")]

    def backend(self, node):
        with self.lock:
            return copy.deepcopy((self.lb or {}).get("backends", {}).get(node))

    def backend_reads(self):
        return sum(1 for r in self.requests if r[:2] == ("GET", "/v1/backends"))

    def status_reads(self):
        return sum(1 for r in self.requests if r[:2] == ("GET", "/v1/status"))

    # --- the fake itself -----------------------------------------------------------------

    def _group(self, name):
        return next((g for g in self.cluster["groups"] if g["name"] == name), None)

    def _member(self, name):
        return next((m for m in self.cluster["members"] if m["name"] == name), None)

    def _settle(self):
        now = time.monotonic()
        for name, due in list(self.due.items()):
            group = self._group(name)
            if now >= due and group["move"]:
                group.update(node=group["move"], move=None, state="started")
                del self.due[name]

    def _schedule(self, group, target):
        group.update(move=target, state="moving")
        self.due[group["name"]] = time.monotonic() + self.move_delay

    def _other_eligible(self, group):
        for m in self.cluster["members"]:
            if m["name"] not in (group["node"], *group["bans"]) and not m["standby"]:
                return m["name"]
        return None

    def _handle(self, req, method):
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return _reply(req, 401, {"error": "missing or invalid bearer token"})
        length = int(req.headers.get("Content-Length") or 0)
        body = None
        if length:
            try:
                body = json.loads(req.rfile.read(length))
            except ValueError:
                return _reply(req, 400, {"error": "body is not JSON"})
        with self.lock:
            self.requests.append((method, req.path, body))
            self._settle()
            parts = req.path.split("?", 1)[0].split("/")[1:]
            if parts[:2] == ["v1", "backends"]:
                code, answer = self._route_backends(method, parts[2:], body)
            else:
                code, answer = self._route(method, parts, body or {})
        _reply(req, code, answer)

    def _route(self, method, parts, body):
        if method == "GET" and parts == ["v1", "status"]:
            return 200, copy.deepcopy(self.cluster)
        if method == "GET" and parts == ["v1", "health"]:
            return 200, {"node": "node1", "healthy": True, "sentence": "ok",
                         "lease_valid": True, "lease_time_left": 5.0}  # fmt: skip
        if method != "POST" or len(parts) != 4 or parts[0] != "v1":
            return 404, {"error": "unknown path"}
        _, kind, name, action = parts
        if kind == "nodes":
            member = self._member(name)
            if member is None or action not in ("standby", "unstandby"):
                return 404, {"error": f"unknown node {name} or action"}
            member["standby"] = action == "standby"
            return 200, {"node": name, "standby": member["standby"], "sentence": action}
        group = self._group(name) if kind == "groups" else None
        if group is None:
            return 404, {"error": f"unknown group {name}"}
        if action == "move":
            target = body.get("to") or self._other_eligible(group)
            if target is None or self._member(target) is None:
                return 404, {"error": f"unknown node {body.get('to')}"}
            if target in group["bans"] or self._member(target)["standby"]:
                return 409, {"error": f"{target} is banned or in standby"}
            self._schedule(group, target)
            return 202, {"group": name, "from": group["node"], "to": target,
                         "sentence": f"moving {name} from {group['node']} to {target}"}  # fmt: skip
        if action in ("ban", "unban"):
            node = body.get("node")
            if self._member(node) is None:
                return 404, {"error": f"unknown node {node}"}
            if action == "ban" and node not in group["bans"]:
                group["bans"].append(node)
                if group["node"] == node:
                    self._schedule(group, self._other_eligible(group))
            if action == "unban" and node in group["bans"]:
                group["bans"].remove(node)
            return 200, {"group": name, "bans": list(group["bans"]), "sentence": action}
        if action == "clear":
            group.update(bans=[], move=None, state="started" if group["node"] else "stopped")
            self.due.pop(name, None)
            return 200, {"group": name, "sentence": "cleared"}
        if action == "cleanup":
            group["failcounts"] = {n: 0 for n in group["failcounts"]}
            return 200, {"group": name, "sentence": "cleaned up"}
        return 404, {"error": f"unknown action {action}"}

    def _route_backends(self, method, rest, body):
        if self.lb is None:
            return 404, {"error": "no group has a load balancer (profile lb)"}
        backends = self.lb["backends"]
        if not rest and method == "GET":
            for row in backends.values():
                if row["state"] == "draining" and row["active_connections"]:
                    row["active_connections"] = max(
                        0, row["active_connections"] - self.drain_per_read
                    )
            rows = [{"node": n, **row} for n, row in sorted(backends.items())]
            return 200, {
                "group": self.lb["group"],
                "holder": self.lb["holder"],
                "engine": self.lb["engine"],
                "backends": copy.deepcopy(rows),
            }
        if len(rest) != 1 or method == "GET":
            return 405, {"error": "method not allowed"}
        node = rest[0]
        if method == "DELETE":
            return 200, {"node": node, "changed": backends.pop(node, None) is not None}
        body = body if body is not None else {}
        if not isinstance(body, dict):
            return 400, {"error": "body must be a JSON object"}
        unknown = sorted(set(body) - {"weight", "state"})
        if unknown:
            return 400, {"error": f"unknown field(s): {', '.join(unknown)}"}
        if not body:
            return 400, {"error": "give weight and/or state"}
        row = backends.get(node)
        if row is None:
            return 404, {"error": f"no such backend: {node}"}
        weight = body.get("weight", row["weight"])
        state = body.get("state", row["state"])
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 256:
            return 400, {"error": f"backend weight 0..256: {node}: {weight!r}"}
        if state not in BACKEND_STATES:
            return 400, {"error": f"known backend states: {node}: {state!r}"}
        changed = (weight, state) != (row["weight"], row["state"])
        row.update(weight=weight, state=state, in_rotation=state == "active" and weight > 0)
        public = {k: row[k] for k in ("address", "port", "weight", "state")}
        return 200, {"node": node, **public, "changed": changed}


def _reply(req, code, answer):
    data = json.dumps(answer).encode()
    req.send_response(code)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(data)))
    req.end_headers()
    req.wfile.write(data)
