"""A ``Store`` over etcd's v3 JSON gateway (grpc-gateway), with nothing but ``urllib``.

Why several endpoints and short timeouts: when the etcd leader dies, a request in flight to it
can hang for ~7 s (docs/machine-notes.md) although a new leader exists after < 1 s. So each request
gets a short timeout (default 0.5 s) and is retried on the next endpoint; the client sticks to
the last endpoint that answered. ``StoreUnavailable`` is raised only when no endpoint answered
within the call's overall timeout. The lease renewal alone goes to the etcd leader itself
(``_renew_at_leader`` says why).

Over TLS (``https://`` endpoints, the cluster's CA and this node's certificate) and with etcd's
RBAC on, the client authenticates with its etcd user's password (read from a file at each
authentication, so a rotated password is picked up) and sends the token etcd returns. etcd
keeps tokens in each member's memory: a member that restarted has forgotten them and answers
"invalid auth token", after which the client authenticates again and retries once.

Retrying writes is safe here because every write is idempotent or self-checking: ``put`` and
``keepalive`` can be repeated; a retried ``create_if_absent``/``compare_and_put`` whose first
attempt was applied sees its own value (same lease) in the failure branch and reports success.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import os
import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clusterctl.agent.store.base import (
    Compare,
    LeaseExpired,
    Store,
    StoreError,
    StoreUnavailable,
    Write,
)
from clusterctl.agent.tls import TlsFiles

_HEADERS = {"Content-Type": "application/json", "Connection": "keep-alive"}
# gRPC status codes that mean "try another member" (Unavailable, DeadlineExceeded, Aborted).
_RETRY_CODES = {4, 10, 14}
# ... and "authenticate (again), then retry": Unauthenticated (a token this member does not
# know: it restarted, or expired it) or InvalidArgument "user name is empty" (no token sent).
_AUTH_CODE = 16
# A kept-alive connection the server closed meanwhile (over TLS: an EOF or close_notify
# where the answer should be): the request never reached it, so it is sent once more.
_CLOSED_BY_SERVER = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)
_OLD_AUTH_MESSAGE = "revision of auth store is old"
_NO_TOKEN_MESSAGE = "user name is empty"
_PERMISSION_DENIED_CODE = 7
_AUTH_OFF = "authentication is not enabled"
# Between two looks for a new etcd leader while the members still elect one.
_RETRY_PAUSE = 0.02


def _raft_term(header: dict[str, Any]) -> int:
    """The Raft term in an etcd response header (proto3 JSON omits a zero)."""
    return int(header.get("raft_term", 0) or 0)


class _TryElsewhere(Exception):
    """This member gave no usable answer (refused, timed out, unavailable); another may.
    ``refused``: its port is closed (etcd is not running there)."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _scheduling() -> tuple[int, os.sched_param] | tuple[None, None]:
    """The calling thread's CPU scheduling policy and priority (None where unknown)."""
    try:
        return os.sched_getscheduler(0), os.sched_getparam(0)
    except (AttributeError, OSError):
        return None, None


def _set_scheduling(policy: int | None, param: os.sched_param | None) -> None:
    if policy is None or param is None:
        return
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, policy, param)


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def _compare(key: str, target: str, **fields: str) -> dict[str, str]:
    """One txn compare clause: ``target`` (VALUE, CREATE, ...) of ``key`` EQUAL to ``fields``."""
    return {"key": _b64(key), "target": target, "result": "EQUAL", **fields}


def _holds(reply: dict[str, Any], value: str, lease: int | None) -> bool:
    """Whether a failed txn's read-back finds exactly ``value`` on ``lease``: an earlier
    attempt of the same call was applied (its answer lost, then retried)."""
    for response in reply.get("responses") or []:
        for kv in (response.get("response_range") or {}).get("kvs") or []:
            same_value = _unb64(kv.get("value", "")) == value
            if same_value and int(kv.get("lease", 0)) == (lease or 0):
                return True
    return False


def _needs_token(code: object, message: str, token: str | None) -> bool:
    """Whether an error answer means "authenticate (again)": a token this member does not
    know, a token older than the last change of users or roles ("revision of auth store is
    old": the etcd role adds them while agents run), or none sent while auth is on (etcd
    answers that with "user name is empty", or, over TLS, "permission denied" - which, with
    a real token, is a real refusal)."""
    if code == _AUTH_CODE or _NO_TOKEN_MESSAGE in message or _OLD_AUTH_MESSAGE in message:
        return True
    return not token and code == _PERMISSION_DENIED_CODE


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def prefix_range_end(prefix: str) -> bytes:
    """etcd's range_end for "every key starting with prefix": the prefix with its last byte
    incremented (dropping trailing 0xff bytes); b"\\0" means "to the end of the keyspace"."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


def check_endpoint(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is ``http(s)://host[:port]``: a base URL without
    a path, query or user."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} is not http(s)://host:port") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
        or (port is not None and not 0 < port < 65536)
    ):
        raise ValueError(f"{url!r} is not http(s)://host:port")


@dataclass(frozen=True)
class EtcdCredentials:
    """An etcd user (RBAC) and the file holding its password."""

    user: str
    password_file: str

    def password(self) -> str:
        return Path(self.password_file).read_text().strip()


class KeepAlivePool:
    """Idle HTTP/1.1 keep-alive connections per endpoint, shared by threads.

    Why: a new TCP connection per request costs a handshake, and on a loaded node a lost SYN
    is only resent after 1 s, longer than a whole lease. Renewals over a warm connection
    only pay for the request (a lost segment is resent after ~200 ms). A connection is
    reused only after a complete answer; any error closes it. No proxies, ever.
    """

    def __init__(self, max_idle: int = 2, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_idle = max_idle
        self.ssl_context = ssl_context  # for https:// endpoints
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def post(
        self,
        endpoint: str,
        path: str,
        data: bytes,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of one POST. Raises OSError or HTTPException on transport errors.

        A reused connection the server has closed meanwhile fails before any answer; that
        request is sent once more on a fresh connection (within the same timeout).
        """
        deadline = time.monotonic() + timeout
        conn, reused = self._take(endpoint, timeout)
        while True:
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
                conn.request("POST", path, body=data, headers={**_HEADERS, **(headers or {})})
                response = conn.getresponse()
                body = response.read()
            except _CLOSED_BY_SERVER:
                conn.close()
                if not reused or deadline - time.monotonic() <= 0.001:
                    raise
                conn = self.connect(endpoint, deadline - time.monotonic())
                reused = False
                continue
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                self._give_back(endpoint, conn)
            return response.status, body

    def connect(self, endpoint: str, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(endpoint)
        if parts.scheme == "https":
            if self.ssl_context is None:
                raise ValueError(f"{endpoint}: https needs the cluster's TLS files")
            return http.client.HTTPSConnection(
                parts.hostname, parts.port or 2379, timeout=timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection(parts.hostname, parts.port or 2379, timeout=timeout)

    def _take(self, endpoint: str, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(endpoint)
            if idle:
                return idle.pop(), True
        return self.connect(endpoint, timeout), False

    def _give_back(self, endpoint: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(endpoint, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


class WatchStream:
    """One open ``/v3/watch`` stream: the gateway's JSON messages, one per line."""

    def __init__(
        self,
        endpoint: str,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        stall_timeout: float,
    ) -> None:
        self.endpoint = endpoint
        self._conn = conn
        self._response = response
        if conn.sock is not None:
            conn.sock.settimeout(stall_timeout)

    def next(self) -> dict[str, Any]:
        """The next message's ``result``. Raises ``StoreUnavailable`` when the stream ends,
        stalls or carries an error (the caller opens another)."""
        try:
            line = self._response.readline()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise StoreUnavailable(f"watch on {self.endpoint}: {exc!r}") from None
        if not line:
            raise StoreUnavailable(f"watch on {self.endpoint}: the stream ended")
        try:
            message = json.loads(line)
        except ValueError:
            raise StoreUnavailable(f"watch on {self.endpoint}: unreadable message") from None
        if not isinstance(message, dict) or not isinstance(message.get("result"), dict):
            raise StoreUnavailable(f"watch on {self.endpoint}: {str(message)[:200]}")
        return message["result"]

    def close(self) -> None:
        self._conn.close()


class EtcdStore(Store):
    """Client of one etcd cluster. ``endpoints`` are base URLs like ``https://10.0.0.1:2379``.

    ``tls``: the cluster's CA and this client's certificate (needed for https endpoints);
    ``credentials``: the etcd user to authenticate as when etcd's auth is on.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        request_timeout: float = 0.5,
        tls: TlsFiles | None = None,
        credentials: EtcdCredentials | None = None,
        quorum_key: str = "/",
    ) -> None:
        """``quorum_key``: a key this client may read; a renewal counts only once a quorum read
        of it, made after the renewal, comes back from the same Raft term (see
        ``_renew_at_leader``)."""
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if request_timeout <= 0:
            raise ValueError("request_timeout must be > 0")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        for endpoint in self.endpoints:
            check_endpoint(endpoint)
        if tls is None and any(e.startswith("https:") for e in self.endpoints):
            raise ValueError("https endpoints need the cluster's TLS files")
        self.request_timeout = request_timeout
        self.credentials = credentials
        self._current = 0
        self._pool = KeepAlivePool(ssl_context=tls.client_context() if tls else None)
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self._workers: ThreadPoolExecutor | None = None
        self._leader: int | None = None  # the endpoint of the etcd leader, as last seen
        self._leader_term = 0  # the Raft term in which it was seen leading
        self._member_ids: dict[int, str] = {}  # endpoint -> etcd member id
        self._watch_index = -1  # the endpoint of the last watch stream opened
        self._quorum_read = json.dumps({"key": _b64(quorum_key), "count_only": True}).encode()

    # -- transport -------------------------------------------------------------------------

    def _post(
        self, endpoint: str, path: str, data: bytes, timeout: float
    ) -> tuple[int, dict[str, Any] | None]:
        """One POST to one endpoint: (status, JSON object or None if unreadable)."""
        headers = {"Authorization": self._token} if self._token else None
        status, raw = self._pool.post(endpoint, path, data, timeout, headers)
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            payload = None
        return status, payload if isinstance(payload, dict) else None

    def _authenticate(self, endpoint: str, stale: str | None, timeout: float) -> None:
        """Get a new token from ``endpoint`` unless another thread already replaced the
        ``stale`` one. Raises ``StoreError`` if etcd refuses the credentials."""
        assert self.credentials is not None
        with self._token_lock:
            if self._token != stale and self._token is not None:
                return
            try:
                password = self.credentials.password()
            except OSError as exc:
                raise StoreError(f"etcd password file: {exc}") from None
            body = json.dumps({"name": self.credentials.user, "password": password}).encode()
            status, raw = self._pool.post(endpoint, "/v3/auth/authenticate", body, timeout)
            try:
                reply = json.loads(raw or b"{}")
                token = reply.get("token")
            except (ValueError, AttributeError):
                reply, token = {}, None
            if _AUTH_OFF in str(reply.get("message") or reply.get("error") or ""):
                # not turned on (yet: a new cluster's agents start before the etcd role
                # enables it): no token is needed; once it is on, etcd answers "user name
                # is empty" and the client authenticates then
                self._token = ""
                return
            if status != 200 or not isinstance(token, str) or not token:
                raise StoreError(
                    f"{endpoint}: etcd refused user {self.credentials.user!r} (HTTP {status})"
                )
            self._token = token

    def _attempt(self, index: int, path: str, data: bytes, end: float) -> dict[str, Any]:
        """POST ``data`` to endpoint ``index`` once (plus once more after authenticating
        again), before monotonic time ``end``; return its JSON. Raises ``_TryElsewhere`` when
        this member did not answer usefully, ``LeaseExpired``/``StoreError`` on a final
        answer."""
        endpoint = self.endpoints[index]
        reauthenticated = False
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0.001:
                raise _TryElsewhere(f"{endpoint}: timeout exhausted")
            try:
                token = self._token
                if self.credentials is not None and token is None:
                    self._authenticate(endpoint, None, min(self.request_timeout, remaining))
                    remaining = end - time.monotonic()
                status, payload = self._post(
                    endpoint, path, data, max(0.001, min(self.request_timeout, remaining))
                )
            except (OSError, http.client.HTTPException) as exc:  # refused, timeout, reset
                refused = isinstance(exc, ConnectionRefusedError)
                raise _TryElsewhere(f"{endpoint}: {exc!r}", refused) from None
            if payload is None:
                if status < 400:  # an answer we cannot read: ask the next member
                    raise _TryElsewhere(f"{endpoint}: unreadable answer to {path}")
                payload = {}
            if status < 400:
                if "error" in payload and "result" not in payload:
                    raise StoreError(f"{endpoint}{path}: {payload['error']}")
                return payload
            code = payload.get("code")
            message = str(payload.get("message") or payload.get("error") or f"HTTP {status}")
            if (
                self.credentials is not None
                and not reauthenticated
                and _needs_token(code, message, token)
            ):
                reauthenticated = True
                try:
                    self._authenticate(endpoint, token, min(self.request_timeout, remaining))
                except (OSError, http.client.HTTPException) as exc:
                    raise _TryElsewhere(f"{endpoint}: {exc!r}") from None
                continue  # the same member, with the new token
            if "lease not found" in message:
                raise LeaseExpired(message)
            if status >= 500 or code in _RETRY_CODES:
                raise _TryElsewhere(f"{endpoint}: {message}")
            raise StoreError(f"{endpoint}{path}: {message}")

    def _budget(self, timeout: float | None) -> float:
        return self.request_timeout * len(self.endpoints) if timeout is None else timeout

    def _call(self, path: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers; return its JSON.

        Tries each endpoint at most once, one after the other, starting with the last one
        that worked, and gives up when ``timeout`` (default: one ``request_timeout`` per
        endpoint) has elapsed.
        """
        end = time.monotonic() + self._budget(timeout)
        data = json.dumps(body).encode()
        errors: list[str] = []
        first = self._current
        for index in [(first + i) % len(self.endpoints) for i in range(len(self.endpoints))]:
            if end - time.monotonic() <= 0.001:
                break
            try:
                payload = self._attempt(index, path, data, end)
            except _TryElsewhere as exc:
                errors.append(str(exc))
                self._skip(index)
                continue
            except LeaseExpired:
                self._current = index
                raise
            self._current = index
            return payload
        detail = "; ".join(errors) or "timeout exhausted"
        raise StoreUnavailable(f"no etcd endpoint answered {path}: {detail}")

    def _renew_at_leader(
        self, path: str, body: dict[str, Any], timeout: float | None, confirm: bool = True
    ) -> dict[str, Any]:
        """Like ``_call``, for the one request whose latency is safety: the lease renewal,
        sent to the etcd leader itself.

        Why: a follower forwards a renewal to the leader it knows, and etcd 3.4 retries that
        in a busy loop while the leader is dead and the follower has not noticed yet (up to
        two election timeouts); then it polls for a new leader once per election timeout.
        A renewal sent there arrives late, and a member spinning at real-time priority
        burns its node's real-time budget and is frozen in the middle of the election. The
        leader answers a renewal from its own lessor at once.

        So the call asks the member it knows to lead. If that one refuses (its etcd is
        down), it asks every member's status (answered locally, no leader needed) until one
        says it leads, and renews there; as long as the members still name the dead one, it
        waits. If the leader does not answer in time (partitioned from this node, frozen),
        the renewal goes through a member that names a live leader, as any etcd client's
        would. A reply from a later Raft term than the leader was learned in means a new
        leader: the next call looks it up.

        A renewal counts only when a linearizable read sent after its answer, to the same
        member, comes back from the same Raft term. Why: a leader cut off from the others
        goes on answering renewals from its own lessor until it notices (check-quorum, an
        election timeout or more), while the majority has elected a new leader whose lessor
        expires the lease on its own clock: the chaos run saw a partitioned holder renew at
        its own stale leader for 0.7 s and keep the VIP 0.12 s after another node took it.
        The read needs the leader's quorum (a ReadIndex round): answered in the same term, no
        newer leader existed when it was served, so the renewal was made by the lessor that
        counts, and every request was sent after the call started. ``confirm=False`` skips
        that read: for a lease no deadline is measured from (an idle node's), the renewal
        only has to reach etcd, and the read would double the cost of every renewal.
        """
        budget = self._budget(timeout)
        end = time.monotonic() + budget
        data = json.dumps(body).encode()
        refused: set[int] = set()  # this call: the member's etcd is down
        silent: set[int] = set()  # this call: the member did not answer in time
        errors: dict[int, str] = {}
        while end - time.monotonic() > 0.001:
            target, leads = self._leader, True
            if target is None or target in refused or target in silent:
                target, leads = self._find_leader(end, refused, silent)
                if target is None:  # an election under way: nobody to ask yet
                    time.sleep(min(_RETRY_PAUSE, max(0.0, end - time.monotonic())))
                    continue
            try:
                payload = self._attempt(
                    target, path, data, min(end, time.monotonic() + budget * 0.4)
                )
            except _TryElsewhere as exc:
                errors[target] = str(exc)
                (refused if exc.refused else silent).add(target)
                if self._leader == target:
                    self._leader = None
                continue
            header = payload.get("result", payload).get("header", {})
            term = _raft_term(header)
            if not confirm:
                if leads:
                    self._leader = target
                return payload
            try:
                confirmed = self._attempt(
                    target,
                    "/v3/kv/range",
                    self._quorum_read,
                    min(end, time.monotonic() + budget * 0.4),
                )
            except _TryElsewhere as exc:  # no quorum behind it (a cut-off leader), or slow
                errors[target] = f"{exc} (confirming the renewal)"
                silent.add(target)
                if self._leader == target:
                    self._leader = None
                continue
            if _raft_term(confirmed.get("header", {})) != term:
                errors[target] = f"{self.endpoints[target]}: a new Raft term since the renewal"
                self._leader = None
                continue
            if leads:
                self._leader = target
                if term > self._leader_term:
                    self._leader = None  # answered in a newer term: look the leader up
            return payload
        detail = "; ".join(errors[i] for i in sorted(errors)) or "no etcd leader elected"
        raise StoreUnavailable(f"no etcd endpoint answered {path}: {detail}")

    def _find_leader(
        self, end: float, refused: set[int], silent: set[int]
    ) -> tuple[int | None, bool]:
        """The endpoint to renew at, from every member's status: (index, whether it is the
        leader), or (None, False) while the members elect one or name a dead one."""
        statuses = self._statuses(end, refused)
        for index, (member, _, _) in statuses.items():
            self._member_ids[index] = member
        by_member = {member: index for index, member in self._member_ids.items()}
        for index, (member, leader, term) in statuses.items():
            if member == leader:
                self._leader_term = term
                return index, True
        for index, (_, leader, term) in sorted(statuses.items()):
            if not leader or index in silent:
                continue
            named = by_member.get(leader)
            if named is not None and named in refused:
                continue  # the dead leader, not noticed yet: forwarding would spin
            if named is not None and named not in silent and named in statuses:
                self._leader_term = term
                return named, True
            return index, False  # a live leader this node cannot reach: forward
        return None, False

    def _statuses(self, end: float, refused: set[int]) -> dict[int, tuple[str, str, int]]:
        """(member id, leader id, Raft term) of every member that answers its status in
        time, asked in parallel; members that refuse join ``refused``."""
        timeout = max(0.001, min(self.request_timeout, end - time.monotonic(), 0.1))

        def ask(index: int) -> tuple[int, tuple[str, str, int] | None, bool]:
            try:
                status, payload = self._post(
                    self.endpoints[index], "/v3/maintenance/status", b"{}", timeout
                )
            except ConnectionRefusedError:
                return index, None, True
            except (OSError, http.client.HTTPException):
                return index, None, False
            header = (payload or {}).get("header", {})
            if status != 200 or "member_id" not in header:
                return index, None, False
            member, leader = str(header["member_id"]), str(payload.get("leader", "") or "")
            return index, (member, leader, _raft_term(header)), False

        pool = self._workers_pool()
        pending = {pool.submit(ask, i) for i in range(len(self.endpoints)) if i not in refused}
        found: dict[int, tuple[str, str, int]] = {}
        # Done as soon as a member says it leads: a member that does not answer (cut off,
        # frozen) must not cost its whole timeout on every renewal while the others elect.
        while pending:
            done, pending = wait(pending, timeout=timeout + 0.05, return_when=FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                index, status, was_refused = future.result()
                if was_refused:
                    refused.add(index)
                elif status is not None:
                    found[index] = status
            if any(member == leader for member, leader, _ in found.values()):
                break
        return found

    def _workers_pool(self) -> ThreadPoolExecutor:
        """The threads that ask the members' status, made on first use by the thread that
        renews, whose CPU scheduling they copy (the agent's loop runs at real-time priority
        with reset-on-fork: a thread it starts would otherwise run as an ordinary one, and a
        renewal under CPU load would wait behind the workload)."""
        if self._workers is None:
            policy, param = _scheduling()
            self._workers = ThreadPoolExecutor(
                max_workers=2 * len(self.endpoints),  # a silent member's ask may still run
                thread_name_prefix="etcd-renewal",
                initializer=_set_scheduling,
                initargs=(policy, param),
            )
        return self._workers

    def member_ready(self, endpoint: str, key: str, timeout: float | None = None) -> bool:
        # A linearizable (not serializable) read served by this member alone: it needs the
        # leader's read index and the member's applied index to reach it.
        body = json.dumps({"key": _b64(key), "count_only": True}).encode()
        endpoint = endpoint.rstrip("/")
        budget = timeout or self.request_timeout
        try:
            for _ in range(2):  # the second time with a token this member knows
                token = self._token
                if self.credentials is not None and token is None:
                    self._authenticate(endpoint, None, budget)
                status, payload = self._post(endpoint, "/v3/kv/range", body, budget)
                if status == 200:
                    return payload is not None and "header" in payload
                reply = payload or {}
                if self.credentials is None or not _needs_token(
                    reply.get("code"), str(reply.get("message") or ""), token
                ):
                    return False
                self._authenticate(endpoint, token, budget)
            return False
        except (OSError, http.client.HTTPException, StoreError):
            return False

    def member_call(
        self, endpoint: str, path: str, body: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """One maintenance call answered by the member behind ``endpoint`` itself (its status,
        the member list, a leadership transfer: none needs a token). Raises
        ``StoreUnavailable`` when it does not answer, ``StoreError`` on an error answer."""
        data = json.dumps(body).encode()
        try:
            status, payload = self._post(
                endpoint.rstrip("/"), path, data, timeout or self.request_timeout
            )
        except (OSError, http.client.HTTPException) as exc:
            raise StoreUnavailable(f"{endpoint}: {exc!r}") from None
        if status != 200 or payload is None:
            message = (payload or {}).get("message") or (payload or {}).get("error")
            raise StoreError(f"{endpoint}{path}: HTTP {status} {message or ''}".rstrip())
        return payload

    def close(self) -> None:
        """Close the idle connections (a later call opens new ones)."""
        self._pool.close()
        if self._workers is not None:
            self._workers.shutdown(wait=False)
            self._workers = None

    def _skip(self, index: int) -> None:
        """Start the next call after a failed endpoint. Without this, a call whose budget is
        spent on one unanswering endpoint (a partitioned member: packets dropped, so the
        request times out rather than being refused) leaves ``_current`` on it, and every later
        call with a budget <= request_timeout (renewals, the loop's reads) waits on the same
        dead member again: the agent saw "no quorum" for as long as the partition lasted,
        although two healthy members were a request away."""
        if self._current == index:
            self._current = (index + 1) % len(self.endpoints)

    # -- leases ----------------------------------------------------------------------------

    def grant_lease(self, ttl: float, timeout: float | None = None) -> int:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        # etcd works in whole seconds: round up, never down (a shorter lease would break the
        # caller's fencing arithmetic).
        reply = self._call("/v3/lease/grant", {"TTL": math.ceil(ttl)}, timeout)
        if reply.get("error"):
            raise StoreError(f"lease grant failed: {reply['error']}")
        return int(reply["ID"])

    def keepalive(self, lease_id: int, timeout: float | None = None, confirm: bool = True) -> float:
        body = {"ID": str(lease_id)}
        reply = self._renew_at_leader("/v3/lease/keepalive", body, timeout, confirm)
        # The gateway streams; one message comes back as {"result": {...}}. A lease that is
        # gone is answered with TTL 0 (omitted in proto3 JSON).
        result = reply.get("result", reply)
        ttl = int(result.get("TTL", 0))
        if ttl <= 0:
            raise LeaseExpired(f"lease {lease_id:x} not found")
        return float(ttl)

    def revoke(self, lease_id: int, timeout: float | None = None) -> None:
        with contextlib.suppress(LeaseExpired):
            self._call("/v3/lease/revoke", {"ID": str(lease_id)}, timeout)

    # -- keys ------------------------------------------------------------------------------

    def get(self, key: str, timeout: float | None = None) -> str | None:
        reply = self._call("/v3/kv/range", {"key": _b64(key)}, timeout)
        kvs = reply.get("kvs") or []
        return _unb64(kvs[0].get("value", "")) if kvs else None

    def get_prefix(self, prefix: str, timeout: float | None = None) -> dict[str, str]:
        body = {"key": _b64(prefix), "range_end": _b64(prefix_range_end(prefix))}
        reply = self._call("/v3/kv/range", body, timeout)
        return {_unb64(kv["key"]): _unb64(kv.get("value", "")) for kv in reply.get("kvs") or []}

    def get_range(self, start: str, end: str, timeout: float | None = None) -> dict[str, str]:
        return self.range_at_revision(start, end, timeout)[0]

    def range_at_revision(
        self, start: str, end: str, timeout: float | None = None
    ) -> tuple[dict[str, str], int]:
        """``get_range`` and the store revision it was read at (a watch resumes after it)."""
        body = {"key": _b64(start), "range_end": _b64(end)}
        reply = self._call("/v3/kv/range", body, timeout)
        kv = {_unb64(kv["key"]): _unb64(kv.get("value", "")) for kv in reply.get("kvs") or []}
        return kv, int(reply.get("header", {}).get("revision", 0) or 0)

    def open_watch(
        self,
        start: str,
        end: str,
        after_revision: int,
        stall_timeout: float,
        fresh_token: bool = False,
    ) -> WatchStream:
        """A watch of ``[start, end)`` from revision ``after_revision + 1``, on the first
        member that accepts it (starting with the one after the last stream's, so a member
        that broke a stream is not asked first again), with progress notifications. The
        member is asked to end the stream when it loses its leader (etcd's "hasleader"
        metadata): a member cut off from the others must not pass for quiet. Reading the
        stream raises ``StoreUnavailable`` once nothing came for ``stall_timeout``.
        ``fresh_token``: authenticate again first (etcd refused the last stream's token: a
        stream cannot re-authenticate the way a call does). Raises ``StoreUnavailable`` when
        no member accepts it."""
        create: dict[str, Any] = {
            "key": _b64(start),
            "range_end": _b64(end),
            "start_revision": str(after_revision + 1),
            "progress_notify": True,
        }
        data = json.dumps({"create_request": create}).encode()
        if fresh_token and self.credentials is not None:
            self._token = None
        errors: list[str] = []
        for _ in range(len(self.endpoints)):
            index = self._watch_index = (self._watch_index + 1) % len(self.endpoints)
            endpoint = self.endpoints[index]
            try:
                if self.credentials is not None and self._token is None:
                    self._authenticate(endpoint, None, self.request_timeout)
                headers = {**_HEADERS, "Grpc-Metadata-hasleader": "true"}
                if self._token:
                    headers["Authorization"] = self._token
                conn = self._pool.connect(endpoint, self.request_timeout)
                conn.request("POST", "/v3/watch", body=data, headers=headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException, StoreError) as exc:
                errors.append(f"{endpoint}: {exc!r}")
                continue
            if response.status != 200:
                conn.close()
                if response.status == 401 and self.credentials is not None:
                    self._token = None  # authenticate again with the next member
                errors.append(f"{endpoint}: HTTP {response.status}")
                continue
            return WatchStream(endpoint, conn, response, stall_timeout)
        raise StoreUnavailable(f"no etcd member accepted a watch: {'; '.join(errors)}")

    def put(
        self, key: str, value: str, lease: int | None = None, timeout: float | None = None
    ) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease is not None:
            body["lease"] = str(lease)
        self._call("/v3/kv/put", body, timeout)

    def delete(self, key: str, timeout: float | None = None) -> bool:
        reply = self._call("/v3/kv/deleterange", {"key": _b64(key)}, timeout)
        return int(reply.get("deleted", 0)) > 0

    def delete_prefix(self, prefix: str, timeout: float | None = None) -> int:
        body = {"key": _b64(prefix), "range_end": _b64(prefix_range_end(prefix))}
        reply = self._call("/v3/kv/deleterange", body, timeout)
        return int(reply.get("deleted", 0))

    # -- transactions ----------------------------------------------------------------------

    def compare_and_delete(
        self, key: str, expected_value: str, timeout: float | None = None
    ) -> bool:
        """See ``Store``. If a first attempt was applied but its answer lost, a retry finds
        the key gone and returns False: callers use it to release, so "gone" is what counts."""
        body = {
            "compare": [_compare(key, "VALUE", value=_b64(expected_value))],
            "success": [{"request_delete_range": {"key": _b64(key)}}],
        }
        return bool(self._call("/v3/kv/txn", body, timeout).get("succeeded", False))

    def transaction(
        self, compares: Sequence[Compare], writes: Sequence[Write], timeout: float | None = None
    ) -> bool:
        """See ``Store``."""
        if not writes:
            raise ValueError("a transaction needs at least one write")
        success: list[dict[str, Any]] = []
        for write in writes:
            if write.value is None:
                success.append({"request_delete_range": {"key": _b64(write.key)}})
                continue
            put: dict[str, Any] = {"key": _b64(write.key), "value": _b64(write.value)}
            if write.lease is not None:
                put["lease"] = str(write.lease)
            success.append({"request_put": put})
        body = {
            "compare": [
                _compare(c.key, "CREATE", create_revision="0")
                if c.value is None
                else _compare(c.key, "VALUE", value=_b64(c.value))
                for c in compares
            ],
            "success": success,
            "failure": [{"request_range": {"key": _b64(writes[0].key)}}],
        }
        reply = self._call("/v3/kv/txn", body, timeout)
        if reply.get("succeeded"):
            return True
        first = writes[0]
        return first.value is not None and _holds(reply, first.value, first.lease)

    def compare_and_put(
        self,
        key: str,
        expected: str | None,
        new: str,
        lease: int | None = None,
        timeout: float | None = None,
    ) -> bool:
        if expected is None:
            # create_revision == 0 <=> the key does not exist.
            compare = _compare(key, "CREATE", create_revision="0")
        else:
            compare = _compare(key, "VALUE", value=_b64(expected))
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(new)}
        if lease is not None:
            put["lease"] = str(lease)
        body = {
            "compare": [compare],
            "success": [{"request_put": put}],
            # Read the key back on failure: if it already holds exactly our value and lease,
            # an earlier attempt of this very call was applied (answer lost, then retried).
            "failure": [{"request_range": {"key": _b64(key)}}],
        }
        reply = self._call("/v3/kv/txn", body, timeout)
        if reply.get("succeeded"):
            return True
        return new != expected and _holds(reply, new, lease)
