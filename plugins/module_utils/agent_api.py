# Copyright: clusterctl developers
# Apache License 2.0 (see galaxy.yml)
"""Client for clusterctl's agent REST API (docs/agent-api.md), shared by the modules.

It must not import the ``clusterctl`` package: modules run on hosts where it is absent.
"""

from __future__ import annotations

import json
from urllib.error import HTTPError, URLError
from urllib.parse import quote

from ansible.module_utils.urls import open_url

DEFAULT_API_TIMEOUT = 5.0

# HTTP statuses after which the next endpoint is tried: this node cannot answer for the
# cluster right now (503: no quorum here / loop stalled; 502/504: a proxy in the way).
_TRY_NEXT_STATUSES = frozenset({502, 503, 504})


class AgentApiError(Exception):
    """An error answer (or no answer) from the agent API.

    ``status`` is the HTTP status (None when no endpoint answered), ``error`` the API's own
    one-line ``error`` message, ``url`` the request that produced it.
    """

    def __init__(self, message, status=None, error=None, url=None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.url = url


class AgentAuthError(AgentApiError):
    """401: missing or wrong bearer token."""


class AgentNotFoundError(AgentApiError):
    """404: unknown group, node or path."""


class AgentConflictError(AgentApiError):
    """409: refused by the current state (target banned, in standby, ...)."""


class AgentUnavailableError(AgentApiError):
    """No endpoint could answer (connection errors, timeouts, 503 everywhere)."""


_ERRORS_BY_STATUS = {401: AgentAuthError, 404: AgentNotFoundError, 409: AgentConflictError}


def agent_argument_spec():
    """Options every clusterctl.cluster module takes to reach the agent API."""
    return dict(
        api_url=dict(type="list", elements="str", required=True),
        api_token=dict(type="str", no_log=True),
        api_token_file=dict(type="path"),
        api_timeout=dict(type="float", default=DEFAULT_API_TIMEOUT),
        ca_path=dict(type="path"),
        client_cert=dict(type="path"),
        client_key=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
    )


# Pass these to AnsibleModule together with agent_argument_spec().
AGENT_MUTUALLY_EXCLUSIVE = [("api_token", "api_token_file")]
AGENT_REQUIRED_ONE_OF = [("api_token", "api_token_file")]


def agent_from_module(module):
    """An AgentApi from the module's shared options; fails the module on a bad option."""
    params = module.params
    urls = [u.strip().rstrip("/") for u in params["api_url"] if u and u.strip()]
    if not urls:
        module.fail_json(msg="api_url must list at least one URL such as http://10.0.0.11:7480")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            module.fail_json(msg=f"api_url {url!r} must start with http:// or https://")
    token = params.get("api_token")
    if token is None:
        path = params["api_token_file"]
        try:
            with open(path, encoding="utf-8") as handle:
                # the first line: during `clusterctl token rotate` a second one follows
                lines = [line.strip() for line in handle.read().splitlines() if line.strip()]
            token = lines[0] if lines else ""
        except OSError as exc:
            module.fail_json(msg=f"cannot read api_token_file {path}: {exc.strerror or exc}")
        if not token:
            module.fail_json(msg=f"api_token_file {path} is empty")
        module.no_log_values.add(token)
    else:
        token = token.strip()
    if params["api_timeout"] <= 0:
        module.fail_json(msg="api_timeout must be greater than 0")
    if bool(params.get("client_cert")) != bool(params.get("client_key")):
        module.fail_json(msg="client_cert and client_key go together")
    tls = {
        "ca_path": params.get("ca_path"),
        "client_cert": params.get("client_cert"),
        "client_key": params.get("client_key"),
        "validate_certs": params.get("validate_certs", True),
    }
    return AgentApi(urls, token, params["api_timeout"], tls)


class AgentApi:
    """Calls the agent API on the first endpoint of ``url_base`` that answers.

    Any node answers for the whole cluster, so an endpoint that cannot be reached (or answers
    503) is skipped; a definite answer (2xx, 400, 401, 404, 409) from one node is final.
    """

    def __init__(self, url_base, token, timeout=DEFAULT_API_TIMEOUT, tls=None):
        if isinstance(url_base, str):
            url_base = [url_base]
        self.urls = [u.rstrip("/") for u in url_base]
        if not self.urls:
            raise ValueError("AgentApi needs at least one base URL")
        self.token = token
        self.timeout = timeout
        # open_url's TLS options: the cluster's CA (servers are verified against it) and the
        # controller's client certificate (the agents require one)
        self.tls = {k: v for k, v in (tls or {}).items() if v is not None}

    # --- transport ---------------------------------------------------------------------

    def request(self, method, path, body=None):
        """JSON answer of ``method path`` from the first endpoint that answers."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        failures = []
        last_status = None
        for base in self.urls:
            url = base + path
            try:
                resp = open_url(
                    url,
                    data=data,
                    headers=headers,
                    method=method,
                    timeout=self.timeout,
                    use_proxy=False,
                    follow_redirects="none",
                    http_agent="clusterctl-ansible",
                    **self.tls,
                )
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
            except (URLError, OSError) as exc:  # refused, unreachable, timed out
                reason = getattr(exc, "reason", None) or exc
                failures.append(f"{base}: {reason}")
                continue
            except Exception as exc:  # open_url's own errors (SSL validation, ...)
                failures.append(f"{base}: {exc}")
                continue
            try:
                return json.loads(raw.decode("utf-8")) if raw else {}
            except ValueError:
                raise AgentApiError(
                    f"{method} {url} answered something that is not JSON", url=url
                ) from None
        raise AgentUnavailableError(
            f"no agent API endpoint answered {method} {path}: " + "; ".join(failures),
            status=last_status,
            error="; ".join(failures),
        )

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

    def backends(self):
        """The load balancer's backends (404 when no group has a load balancer)."""
        return self.request("GET", "/v1/backends")

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
    """The API's ``error`` message of an HTTPError, else its reason."""
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
