# Copyright: clusterctl developers
# Apache License 2.0 (see galaxy.yml)
"""The one client of clusterctl's agent REST API (docs/agent-api.md).

Every caller uses this file: the collection's modules import it as module_utils, and the
``clusterctl`` package reaches the same file through the link ``clusterctl/agent/apiclient.py``
(the controller's ``clusterctl/agentclient.py`` adds its hints; an agent asks the holder with
it). So it imports nothing but Python's standard library: modules run on hosts where neither
Ansible's module_utils nor the ``clusterctl`` package may be importable the same way, and the
agent ships without either.

Any node answers for the whole cluster, so a call goes to the base URLs in turn: an endpoint
that cannot be reached, or answers 502/503/504 (no quorum there, a proxy in the way), is
skipped; a definite answer (2xx, 400, 401, 404, 409) from one node is final. Redirects are
refused (the bearer token must never follow one) and environment proxies are ignored.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

DEFAULT_API_TIMEOUT = 5.0
API_PORT = 7480
# The API's bound on a backend's weight (HAProxy's limit; the nft engine uses the same scale so
# a spec can switch engines). The agent validates with it; clients check it before asking.
MAX_BACKEND_WEIGHT = 256

_TRY_NEXT_STATUSES = frozenset({502, 503, 504})


class AgentApiError(Exception):
    """An error answer (or no answer) from the agent API.

    ``status`` is the HTTP status (None when no endpoint answered), ``error`` the API's own
    one-line ``error`` message (or, when nobody answered, why each endpoint did not), ``url``
    the request that produced it.
    """

    def __init__(self, message, status=None, error=None, url=None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.url = url


class AgentBadRequestError(AgentApiError):
    """400: the request names something that does not exist or breaks a rule."""


class AgentAuthError(AgentApiError):
    """401: missing or wrong bearer token."""


class AgentNotFoundError(AgentApiError):
    """404: unknown group or path, or no load balancer."""


class AgentConflictError(AgentApiError):
    """409: refused by the current state (target banned, in standby, ...)."""


class AgentUnavailableError(AgentApiError):
    """No endpoint could answer (connection errors, timeouts, 503 everywhere). ``refused``:
    every endpoint refused the connection (no agent listens there, as opposed to a node that
    does not answer at all)."""

    refused = False


_ERRORS_BY_STATUS = {
    400: AgentBadRequestError,
    401: AgentAuthError,
    404: AgentNotFoundError,
    409: AgentConflictError,
}


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises the 3xx as an HTTPError


def client_context(ca_path=None, client_cert=None, client_key=None, validate_certs=True):
    """A TLS context: the server verified against ``ca_path`` (the system's store when None)
    unless ``validate_certs`` is false, and our certificate presented when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_path)
    if not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def base_urls(addresses, port=API_PORT, tls=False):
    """Base URLs of the API on ``addresses`` (IPv6 literals bracketed)."""
    scheme = "https" if tls else "http"
    return [f"{scheme}://{f'[{a}]' if ':' in a else a}:{port}" for a in addresses]


class AgentApi:
    """Calls the agent API on the first endpoint of ``url_base`` that answers.

    ``context``: the TLS context for https URLs (``client_context``); None uses Python's
    default verification.
    """

    def __init__(self, url_base, token, timeout=DEFAULT_API_TIMEOUT, context=None):
        if isinstance(url_base, str):
            url_base = [url_base]
        self.urls = [u.rstrip("/") for u in url_base]
        if not self.urls:
            raise ValueError("AgentApi needs at least one base URL")
        self.token = token
        self.timeout = timeout
        handlers = [urllib.request.ProxyHandler({}), _RefuseRedirects()]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    # --- transport ---------------------------------------------------------------------

    def request(self, method, path, body=None):
        """JSON answer of ``method path`` from the first endpoint that answers."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        failures = []
        last_status = None
        refused = 0
        for base in self.urls:
            url = base + path
            req = urllib.request.Request(url, data=data, method=method)
            req.add_header("Authorization", f"Bearer {self.token}")
            req.add_header("Accept", "application/json")
            req.add_header("User-Agent", "clusterctl")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except HTTPError as exc:
                status = exc.code
                error = _error_text(exc)
                if status in _TRY_NEXT_STATUSES:
                    last_status = status
                    failures.append(f"{base}: HTTP {status} {error}")
                    continue
                cls = _ERRORS_BY_STATUS.get(status, AgentApiError)
                raise cls(
                    f"{method} {url} failed: HTTP {status}: {error}",
                    status=status,
                    error=error,
                    url=url,
                ) from None
            except (URLError, OSError, ValueError) as exc:  # refused, timed out, TLS refused
                reason = getattr(exc, "reason", None) or exc
                refused += isinstance(reason, ConnectionRefusedError)
                failures.append(f"{base}: {reason}")
                continue
            try:
                return json.loads(raw.decode("utf-8")) if raw else {}
            except ValueError:
                raise AgentApiError(
                    f"{method} {url} answered something that is not JSON", url=url
                ) from None
        error = AgentUnavailableError(
            f"no agent API endpoint answered {method} {path}: " + "; ".join(failures),
            status=last_status,
            error="; ".join(failures),
        )
        error.refused = refused == len(self.urls)
        raise error

    # --- endpoints ---------------------------------------------------------------------

    def health(self):
        return self.request("GET", "/v1/health")

    def status(self):
        return self.request("GET", "/v1/status")

    def move(self, group, to=None):
        return self.request("POST", f"/v1/groups/{_seg(group)}/move", {"to": to})

    def ban(self, group, node):
        return self.request("POST", f"/v1/groups/{_seg(group)}/ban", {"node": node})

    def unban(self, group, node):
        return self.request("POST", f"/v1/groups/{_seg(group)}/unban", {"node": node})

    def clear(self, group):
        return self.request("POST", f"/v1/groups/{_seg(group)}/clear", {})

    def cleanup(self, group):
        return self.request("POST", f"/v1/groups/{_seg(group)}/cleanup", {})

    def standby(self, node):
        return self.request("POST", f"/v1/nodes/{_seg(node)}/standby", {})

    def unstandby(self, node):
        return self.request("POST", f"/v1/nodes/{_seg(node)}/unstandby", {})

    def confirm_fenced(self, node):
        """Say ``node`` is off: groups it owns may start elsewhere without fencing it."""
        return self.request("POST", f"/v1/nodes/{_seg(node)}/confirm-fenced", {})

    def backends(self, local=False):
        """The load balancer's backends (404 when no group has a load balancer); ``local``:
        only what the load balancer on the answering node itself sees."""
        return self.request("GET", "/v1/backends?local=1" if local else "/v1/backends")

    def set_backend(self, node, weight=None, state=None):
        """Change the backend's weight and/or state; only the given fields are sent."""
        body = {}
        if weight is not None:
            body["weight"] = weight
        if state is not None:
            body["state"] = state
        return self.request("POST", f"/v1/backends/{_seg(node)}", body)

    def delete_backend(self, node):
        """Remove the backend's registration (``changed`` is false when there was none)."""
        return self.request("DELETE", f"/v1/backends/{_seg(node)}")

    def history(self, group=None, since=None, limit=1000):
        """Transitions, oldest first: of ``group`` only, at or after ``since`` (epoch s)."""
        query = {"limit": limit}
        if group is not None:
            query["group"] = group
        if since is not None:
            query["since"] = f"{since:.6f}"
        return self.request("GET", f"/v1/history?{urlencode(query)}")


def find_group(status, name):
    """The group ``name`` of a /v1/status answer, or None."""
    for group in status.get("groups") or []:
        if group.get("name") == name:
            return group
    return None


def find_member(status, name):
    """The member ``name`` of a /v1/status answer, or None."""
    for member in status.get("members") or []:
        if member.get("name") == name:
            return member
    return None


def find_backend(backends, node):
    """The backend ``node`` of a /v1/backends answer, or None."""
    for backend in backends.get("backends") or []:
        if backend.get("node") == node:
            return backend
    return None


def _seg(value):
    return quote(str(value), safe="")


def _error_text(exc):
    """The API's ``error`` message of an HTTPError, else its first line or reason."""
    try:
        raw = exc.read()
    except Exception:
        raw = b""
    try:
        body = json.loads(raw.decode("utf-8"))
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
    except (ValueError, UnicodeDecodeError):
        pass
    text = raw.decode("utf-8", "replace").strip().splitlines()
    return text[0][:200] if text else str(exc.reason)
