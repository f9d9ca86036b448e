"""The agent's REST API and ``/metrics`` (the contract is docs/agent-api.md).

A ``ThreadingHTTPServer`` (daemon threads) next to the loop. Handlers never touch the agent's
mutable state: health and metrics come from its immutable ``snapshot`` (replaced after every
step) and its thread-safe ``metrics``; ``/v1/status`` reads etcd through the store with a short
timeout, so any node answers for the whole cluster; actions only write etcd (``admin``) and the
agents carry them out on their next iteration. Every answer is JSON (errors
``{"error": "<one line>"}``), never a traceback: unexpected errors are logged and answered 500.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import socket
import ssl
import sys
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from clusterctl.agent import admin, api_backends
from clusterctl.agent.config import ConfigError, GroupSpec, is_name
from clusterctl.agent.ha import Agent
from clusterctl.agent.history import read_history
from clusterctl.agent.metrics import CONTENT_TYPE, GroupState, render
from clusterctl.agent.placement import eligible, node_block
from clusterctl.agent.store.base import Store, StoreError, StoreUnavailable
from clusterctl.agent.view import ClusterView, GroupView, parse_view, published_groups

log = logging.getLogger("clusterctl.agent.api")

JSON = "application/json"
MAX_BODY = 64 * 1024
READ_TIMEOUT = 5.0  # seconds one read (or the TLS handshake) may take
CONNECTION_DEADLINE = 15.0  # seconds a connection may live, however it trickles
MAX_CONNECTIONS = 32  # at once; the loop's own work never waits for the API
REFUSED_LOG_EVERY = 10.0  # seconds: refused callers are logged at most this often
MOVE_TTL = 30.0  # a move whose target never takes over is forgotten after this (admin)
GROUP_ACTIONS = ("move", "ban", "unban", "clear", "cleanup")
NODE_ACTIONS = ("standby", "unstandby")


def load_tokens(path: str | Path) -> tuple[str, ...]:
    """The bearer tokens the API accepts: every non-empty line of the file (two during a
    rotation, `clusterctl token rotate`); the first is the one this agent sends to the
    others. Raises ``ConfigError`` naming the rule."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError("api_token_file readable", f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("api_token_file readable", f"{path}: not text") from None
    tokens = tuple(line.strip() for line in lines if line.strip())
    if not tokens:
        raise ConfigError("api_token_file readable", f"{path} is empty")
    return tokens


class ApiError(Exception):
    """An answer other than success: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def _json_reply(status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, (json.dumps(data) + "\n").encode(), JSON, headers)


@dataclass(frozen=True)
class _State:
    """The cluster as read from etcd for one request."""

    kv: dict[str, str]
    specs: dict[str, GroupSpec]
    view: ClusterView


class Api:
    """The request logic, independent of HTTP (``handle`` maps a request to a ``Reply``).

    ``store`` defaults to the agent's; the daemon passes a separate client so that API calls
    never share state with the loop. ``timeout`` bounds each store call; ``stall_after`` is
    how long without a loop iteration makes the node unhealthy.
    """

    def __init__(
        self,
        agent: Agent,
        token: str | tuple[str, ...],
        store: Store | None = None,
        timeout: float = 1.0,
        stall_after: float = 5.0,
        client_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.set_tokens((token,) if isinstance(token, str) else token)
        self.agent = agent
        self.store = store or agent.store
        self.keys = agent.keys
        self.timeout = timeout
        self.stall_after = stall_after
        # calls to other agents: https with this node's certificate when set
        self.client_tls = client_tls
        self._addresses: dict[str, str] = {}  # last address seen per member (offline ones)
        self._lock = threading.Lock()
        self._refused = 0
        self._refused_logged = -REFUSED_LOG_EVERY
        if agent.config.address:
            self._addresses[agent.node] = agent.config.address

    # -- entry point -------------------------------------------------------------------------

    def handle(self, method: str, target: str, authorization: str | None, body: bytes) -> Reply:
        try:
            if not self.authorized(authorization):
                return self.unauthorized()
            parsed = urlsplit(target)
            if parsed.path.rstrip("/") == "/v1/backends":
                self._method(method, "GET", parsed.path)
                return api_backends.list_backends(self, local_only="local=1" in parsed.query)
            if parsed.path.rstrip("/") == "/v1/history":
                self._method(method, "GET", parsed.path)
                return self.history(parse_qs(parsed.query))
            return self._route(method, parsed.path, body)
        except ApiError as exc:
            headers = (("WWW-Authenticate", "Bearer"),) if exc.status == 401 else ()
            return _json_reply(exc.status, {"error": _printable(exc.message)}, headers)
        except StoreUnavailable as exc:
            log.warning("API %s %s: %s", method, target, exc)
            return _json_reply(503, {"error": f"etcd unreachable, no quorum here: {_line(exc)}"})
        except StoreError as exc:
            log.warning("API %s %s: %s", method, target, exc)
            return _json_reply(503, {"error": f"etcd error: {_line(exc)}"})
        except Exception:
            log.exception("API %s %s failed", method, target)
            return _json_reply(500, {"error": "internal error (see the agent's log)"})

    def set_tokens(self, tokens: tuple[str, ...]) -> None:
        """Accept these tokens from now on (the agent re-reads its file on SIGHUP)."""
        if not tokens or not all(tokens):
            raise ValueError("an empty API token would let anyone in")
        self.tokens = tuple(t.encode() for t in tokens)

    @property
    def token(self) -> bytes:
        """The token this agent sends when it asks another agent."""
        return self.tokens[0]

    def authorized(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = token.strip().encode()
        # compare with every accepted token, so the time taken does not tell which matched
        matches = [hmac.compare_digest(given, t) for t in self.tokens]
        return any(matches)

    @staticmethod
    def unauthorized() -> Reply:
        return _json_reply(
            401, {"error": "missing or invalid bearer token"}, (("WWW-Authenticate", "Bearer"),)
        )

    def note_refused(self, client: str, reason: str = "missing or invalid bearer token") -> None:
        """Log a refused caller, at most once per ``REFUSED_LOG_EVERY`` seconds (a flood of
        bad requests must not flood the journal); the count of the others is in the line."""
        with self._lock:
            self._refused += 1
            now = time.monotonic()
            if now - self._refused_logged < REFUSED_LOG_EVERY:
                return
            count, self._refused, self._refused_logged = self._refused, 0, now
        log.warning(
            "API refused %s: %s (%d refusal(s) since the last report)", client, reason, count
        )

    def _route(self, method: str, path: str, body: bytes) -> Reply:
        parts = [p for p in path.split("/") if p]
        if parts == ["v1", "health"]:
            self._method(method, "GET", path)
            return self.health()
        if parts == ["v1", "status"]:
            self._method(method, "GET", path)
            return self.status()
        if parts == ["metrics"]:
            self._method(method, "GET", path)
            return self.metrics()
        if len(parts) == 4 and parts[:2] == ["v1", "groups"] and parts[3] in GROUP_ACTIONS:
            self._method(method, "POST", path)
            data = _parse_body(body)
            return getattr(self, f"group_{parts[3]}")(parts[2], data)
        if len(parts) == 3 and parts[:2] == ["v1", "backends"]:
            node = parts[2]
            if not is_name(node):
                raise ApiError(400, f"not a node name: {node}")
            if method == "DELETE":
                return api_backends.delete_backend(self, node)
            self._method(method, "POST", path)
            return api_backends.update_backend(self, node, _parse_body(body))
        if parts[:2] == ["v1", "nodes"] and parts[3:] == ["confirm-fenced"] and len(parts) == 4:
            self._method(method, "POST", path)
            _fields(_parse_body(body))
            return self.node_confirm_fenced(parts[2])
        if len(parts) == 4 and parts[:2] == ["v1", "nodes"] and parts[3] in NODE_ACTIONS:
            self._method(method, "POST", path)
            _fields(_parse_body(body))
            return self.node_standby(parts[2], parts[3] == "standby")
        raise ApiError(404, f"no such path: {path}")

    @staticmethod
    def _method(method: str, allowed: str, path: str) -> None:
        if method != allowed:
            raise ApiError(405, f"{method} is not allowed on {path} (use {allowed})")

    # -- reading the cluster -----------------------------------------------------------------

    def _read(self) -> _State:
        """One linearizable read of the cluster's keys (raises ``StoreError``)."""
        kv = self.store.get_range(self.keys.root, self.keys.state_end, timeout=self.timeout)
        specs = {s.name: s for s in published_groups(self.keys, kv)}
        view = parse_view(self.keys, kv, tuple(specs.values()))
        with self._lock:
            for node, member in view.members.items():
                if member.address:
                    self._addresses[node] = member.address
        return _State(kv, specs, view)

    @staticmethod
    def _group(state: _State, name: str) -> GroupView:
        gv = state.view.groups.get(name)
        if gv is None:
            raise ApiError(404, f"no such group: {name}")
        return gv

    def _known_nodes(self, state: _State) -> set[str]:
        """Every node the cluster's keys name: members, standby, placement, leaders, owners
        of fencing groups and nodes with a fence record (a node fenced and not back)."""
        fences = self.keys.fences_prefix()
        fenced = {k[len(fences) :] for k in state.kv if k.startswith(fences)}
        return self._view_nodes(state.view) | fenced

    def _view_nodes(self, view: ClusterView) -> set[str]:
        nodes = set(view.members) | set(view.standby) | {self.agent.node}
        for gv in view.groups.values():
            nodes |= set(gv.spec.bans) | set(gv.spec.preferred) | set(gv.failcounts)
            if gv.leader:
                nodes.add(gv.leader)
            if gv.owner:  # a dead owner of a fencing group: an operator may confirm it off
                nodes.add(gv.owner)
        return nodes

    def _node(self, state: _State, name: Any, field: str = "node") -> str:
        """Validate a node name from the request: 400 unless it is a member or known to a
        group spec (bans, preferred), a fail count, a leader or a standby key."""
        if not is_name(name):
            raise ApiError(400, f"{field!r} must be a node name, got {json.dumps(name)}")
        if name not in self._known_nodes(state):
            raise ApiError(400, f"unknown node: {name} (not a member, not in any group spec)")
        return name

    # -- GET ---------------------------------------------------------------------------------

    def _health_numbers(self) -> tuple[Any, float, float]:
        snap = self.agent.snapshot
        age = max(0.0, self.agent.clock.now() - snap.at)
        return snap, age, max(0.0, snap.lease_time_left - age)

    def health(self) -> Reply:
        snap, age, left = self._health_numbers()
        if snap.iteration == 0:
            sentence = "starting: no loop iteration yet"
        elif age > self.stall_after:
            sentence = f"loop stalled: no iteration for {age:.1f} s (last: {snap.sentence})"
        else:
            sentence = snap.sentence
        healthy = snap.iteration > 0 and age <= self.stall_after and snap.store_reachable
        body = {
            "node": snap.node,
            "healthy": healthy,
            "sentence": sentence,
            "lease_valid": snap.lease_valid and left > 0,
            "lease_time_left": round(left, 3),
            # the groups running here: a standby's word from the holder (agent/peers.py)
            "holding": [g.name for g in snap.groups if g.running_here],
            # how the resources running here are, in their own words (a guest's qemu state)
            "notes": {g.name: dict(g.notes) for g in snap.groups if g.running_here and g.notes},
        }
        return _json_reply(200 if healthy else 503, body)

    def history(self, query: dict[str, list[str]]) -> Reply:
        """``GET /v1/history?group=web&since=<epoch seconds>&limit=N``: the cluster's
        transitions, oldest first (at most ``limit``, the newest ones; default 1000)."""
        group = query.get("group", [None])[-1]
        if group is not None and not is_name(group):
            raise ApiError(400, f"not a group name: {group}")
        try:
            since = float(query["since"][-1]) if "since" in query else None
            limit = int(query.get("limit", ["1000"])[-1])
        except ValueError:
            raise ApiError(
                400, "since must be a number (epoch seconds), limit an integer"
            ) from None
        if (since is not None and not math.isfinite(since)) or not 1 <= limit <= 100_000:
            raise ApiError(400, "since must be finite, limit between 1 and 100000")
        entries = read_history(self.store, self.keys, group, since, timeout=self.timeout)
        return _json_reply(200, {"entries": [asdict(e) for e in entries[-limit:]]})

    def status(self) -> Reply:
        state = self._read()  # raises StoreUnavailable -> 503: no quorum here
        view = state.view
        with self._lock:
            addresses = dict(self._addresses)
        members = []
        for name in sorted(self._known_nodes(state)):
            member = view.members.get(name)
            members.append(
                {
                    "name": name,
                    "address": member.address if member else addresses.get(name, ""),
                    "online": member is not None,
                    "standby": member.standby if member else name in view.standby,
                }
            )
        groups = []
        for name in sorted(view.groups):
            gv = view.groups[name]
            vip = next(
                (str(r.params.get("address", "")) for r in gv.spec.resources if r.type == "vip"),
                "",
            )
            group_state = "started" if gv.leader else "stopped"
            group_state = "moving" if gv.move is not None else group_state
            fencing = _fencing_state(state.kv.get(self.keys.fencing(name)))
            if fencing is not None:
                group_state = "fence-failed" if fencing.get("error") else "fencing"
            groups.append(
                {
                    "name": name,
                    "vip": vip,
                    "node": gv.leader,
                    "state": group_state,
                    "failcounts": dict(sorted(gv.failcounts.items())),
                    "bans": list(gv.spec.bans),
                    "move": gv.move.target if gv.move else None,
                    "migration_threshold": gv.spec.migration_threshold,
                    "fencing": fencing,
                    "owner": gv.owner,
                }
            )
        return _json_reply(
            200,
            {
                "cluster": self.agent.config.cluster,
                "node": self.agent.node,
                "quorum": True,  # the linearizable read above just succeeded
                "sentence": self.agent.snapshot.sentence,
                "members": members,
                "groups": groups,
            },
        )

    def metrics(self) -> Reply:
        snap, _, left = self._health_numbers()
        text = render(
            cluster=self.agent.config.cluster,
            node=snap.node,
            counters=self.agent.metrics.snapshot(),
            groups=[
                GroupState(g.name, g.leader, g.running_here, g.failcounts) for g in snap.groups
            ],
            lease_time_left=left,
            members_online=len(snap.members),
            quorum=snap.store_reachable,
        )
        return Reply(200, text.encode(), CONTENT_TYPE)

    # -- POST: groups ------------------------------------------------------------------------

    def group_move(self, group: str, data: dict[str, Any]) -> Reply:
        _fields(data, required=("to",))
        to = data["to"]
        if to is not None and not isinstance(to, str):
            raise ApiError(400, "'to' must be a node name or null")
        state = self._read()
        gv = self._group(state, group)
        view, holder = state.view, gv.leader
        if to is None:
            to = self._pick_target(view, gv)
        else:
            to = self._node(state, to, "to")
            if to == holder:
                raise ApiError(409, f"{group} already runs on {to}")
            if to not in view.members:
                raise ApiError(409, f"{to} is not a live member")
            block = node_block(to, view, gv)
            if block:
                raise ApiError(409, f"cannot move {group} to {to}: {block}")
        admin.request_move(self.store, self.keys, group, to, ttl=MOVE_TTL, timeout=self.timeout)
        sentence = (
            f"moving {group} from {holder} to {to}" if holder else f"starting {group} on {to}"
        )
        log.info("API: %s", sentence)
        return _json_reply(202, {"group": group, "from": holder, "to": to, "sentence": sentence})

    @staticmethod
    def _pick_target(view: ClusterView, gv: GroupView) -> str:
        """``to: null``: the best other eligible member — preferred ones first (in their
        order), then the fewest failures, then by name."""
        preferred = list(gv.spec.preferred)
        candidates = [n for n in view.members if n != gv.leader and eligible(n, view, gv)]
        if not candidates:
            raise ApiError(409, f"no other eligible node to move {gv.name} to")

        def rank(node: str) -> tuple[int, int, str]:
            order = preferred.index(node) if node in preferred else len(preferred)
            return order, gv.failcounts.get(node, 0), node

        return min(candidates, key=rank)

    def group_ban(self, group: str, data: dict[str, Any]) -> Reply:
        _fields(data, required=("node",))
        state = self._read()
        gv = self._group(state, group)
        node = self._node(state, data["node"])
        bans = self._spec_change(admin.ban, group, node)
        if node == gv.leader:
            sentence = f"banned {node} from {group}: it holds {group}, which moves away"
        else:
            sentence = f"banned {node} from {group}"
        log.info("API: %s", sentence)
        return _json_reply(200, {"group": group, "bans": bans, "sentence": sentence})

    def group_unban(self, group: str, data: dict[str, Any]) -> Reply:
        _fields(data, required=("node",))
        state = self._read()
        gv = self._group(state, group)
        node = self._node(state, data["node"])
        was = node in gv.spec.bans
        bans = self._spec_change(admin.unban, group, node)
        sentence = f"unbanned {node} from {group}" if was else f"{node} was not banned from {group}"
        log.info("API: %s", sentence)
        return _json_reply(200, {"group": group, "bans": bans, "sentence": sentence})

    def _spec_change(self, action: Any, group: str, node: str) -> list[str]:
        try:
            return action(self.store, self.keys, group, node, timeout=self.timeout)
        except admin.SpecMissing:
            raise ApiError(404, f"no such group: {group}") from None
        except RuntimeError as exc:
            raise ApiError(409, f"{exc}, try again") from None

    def group_clear(self, group: str, data: dict[str, Any]) -> Reply:
        _fields(data)
        self._group(self._read(), group)
        try:
            sentence = admin.clear(self.store, self.keys, group, timeout=self.timeout)
        except admin.SpecMissing:
            raise ApiError(404, f"no such group: {group}") from None
        except RuntimeError as exc:
            raise ApiError(409, f"{exc}, try again") from None
        log.info("API: %s", sentence)
        return _json_reply(200, {"group": group, "sentence": sentence})

    def group_cleanup(self, group: str, data: dict[str, Any]) -> Reply:
        _fields(data)
        self._group(self._read(), group)
        count = admin.reset_failcounts(self.store, self.keys, group, timeout=self.timeout)
        sentence = f"reset {count} fail count(s) of {group}"
        log.info("API: %s", sentence)
        return _json_reply(200, {"group": group, "sentence": sentence})

    # -- POST: nodes -------------------------------------------------------------------------

    def node_standby(self, node: str, standby: bool) -> Reply:
        state = self._read()
        node = self._node(state, node)
        changed = admin.set_standby(self.store, self.keys, node, standby, timeout=self.timeout)
        if standby:
            sentence = (
                f"{node} is in standby: it releases its groups and acquires none"
                if changed
                else f"{node} was already in standby"
            )
        elif changed:
            sentence = f"{node} left standby (its former groups stay where they are)"
        else:
            sentence = f"{node} was not in standby (by the API)"
        log.info("API: %s", sentence)
        return _json_reply(200, {"node": node, "standby": standby, "sentence": sentence})

    def node_confirm_fenced(self, node: str) -> Reply:
        state = self._read()
        node = self._node(state, node)
        if node in state.view.members:
            raise ApiError(
                409,
                f"{node} is online (its agent renews its lease): it is not off, so it cannot be "
                "confirmed fenced",
            )
        groups = sorted(state.view.groups)
        at = time.time()
        released = admin.confirm_fenced(self.store, self.keys, node, groups, at, self.timeout)
        what = f"; {', '.join(released)} may start elsewhere" if released else ""
        sentence = f"an operator confirmed {node} is off{what}"
        self.agent.history.record("fence-confirmed", reason=sentence)
        log.warning("API: %s", sentence)
        return _json_reply(200, {"node": node, "released": released, "sentence": sentence})


def _fencing_state(text: str | None) -> dict[str, Any] | None:
    """The holder's ``groups/<g>/fencing`` key: {target, error} while it fences."""
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("target"), str):
        return None
    return {"target": data["target"], "error": str(data.get("error") or "")}


def _printable(text: str, limit: int = 300) -> str:
    """One line a log or a terminal can show as it is: what a caller sent (a path, a method)
    is echoed in errors, and may hold control characters."""
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def _line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _parse_body(body: bytes) -> dict[str, Any]:
    """An empty body is ``{}``; otherwise it must be a JSON object."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def _fields(data: dict[str, Any], required: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(data) - set(required))
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
    missing = [f for f in required if f not in data]
    if missing:
        raise ApiError(400, f"missing field(s): {', '.join(missing)}")


# -- HTTP ------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 framing only; the answers come from ``Api``. Every answer is JSON, errors
    of the HTTP layer too (no HTML pages), and no banner names the Python version."""

    server: _Server
    server_version = "clusterctl-agent"
    sys_version = ""
    timeout = READ_TIMEOUT  # per read; the whole connection is bounded by CONNECTION_DEADLINE

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(_json_reply(405, {"error": "method HEAD not allowed"}), body=False)

    def do_PATCH(self) -> None:  # noqa: N802
        self._answer(_json_reply(405, {"error": "method PATCH not allowed"}))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a bad request line, an unknown method, headers too
        long): the same JSON shape as every other answer, and the connection closed."""
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        self._answer(_json_reply(code, {"error": str(text).splitlines()[0][:200]}))

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        # the token first: a caller without it gets nothing read, parsed or forwarded
        if not api.authorized(self.headers.get("Authorization")):
            api.note_refused(self.client_address[0])
            self.close_connection = True
            self._answer(api.unauthorized())
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            reply = _json_reply(400, {"error": f"bad Content-Length (at most {MAX_BODY} bytes)"})
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            reply = api.handle(method, self.path, self.headers.get("Authorization"), body)
        self._answer(reply)

    def _answer(self, reply: Reply, body: bool = True) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """Threads per connection, at most ``MAX_CONNECTIONS`` at once (more are closed at
    once); each connection lives at most ``CONNECTION_DEADLINE`` seconds, however slowly its
    client trickles bytes; with ``tls`` the handshake runs in the connection's thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: Api, tls: ssl.SSLContext | None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        self.tls = tls
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.api.note_refused(client_address[0], "too many connections")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # the timer cuts whatever socket the connection is on by then (wrapping it in TLS
        # detaches the plain one)
        current = [request]
        deadline = threading.Timer(CONNECTION_DEADLINE, lambda: _cut(current[0]))
        deadline.daemon = True
        deadline.start()
        try:
            if self.tls is not None:
                request.settimeout(READ_TIMEOUT)
                try:
                    request = self.tls.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError) as exc:
                    self.api.note_refused(client_address[0], f"TLS handshake: {_line(exc)}")
                    return
                current[0] = request
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a connection cut by its deadline, reset by its client, or a TLS error mid-way
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError | ssl.SSLError):
            log.debug("API connection from %s ended: %s", client_address[0], exc)
            return
        log.exception("API connection from %s failed", client_address)


def _cut(request: socket.socket) -> None:
    """End a connection that outlived its deadline (its thread then finishes)."""
    with contextlib.suppress(OSError):
        request.shutdown(socket.SHUT_RDWR)


class ApiServer:
    """The HTTP server and its thread. Binds in the constructor (``OSError`` if it cannot);
    ``start`` serves in a daemon thread; ``stop`` shuts down and closes the socket."""

    def __init__(
        self,
        api: Api,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.api = api
        self.httpd = _Server((host, port), api, tls)
        self.scheme = "https" if tls else "http"
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self.httpd.server_address[0])
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}"

    def start(self) -> ApiServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="clusterctl-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
