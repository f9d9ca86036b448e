"""The controller's client of the agents' REST API (docs/agent-api.md).

Any node answers for the whole cluster, so calls go to the nodes in turn until one answers.
With ``tls`` (the cluster's CA and the controller's certificate) it speaks https and accepts
only a server certificate of the cluster's CA naming the node's address.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from clusterctl.agent.tls import TlsError, TlsFiles
from clusterctl.errors import ClusterctlError

API_PORT = 7480
# Nodes are reached directly, never through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class AgentApiError(ClusterctlError):
    """The API answered with an error (4xx/5xx) or no node answered."""

    def __init__(self, message: str, hint: str = "", status: int = 0) -> None:
        super().__init__(message, hint)
        self.status = status


@dataclass
class AgentClient:
    addresses: list[str]
    token: str
    port: int = API_PORT
    timeout: float = 3.0
    tls: TlsFiles | None = None
    _opener: urllib.request.OpenerDirector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._opener = _OPENER
        if self.tls is not None:
            try:
                context = self.tls.client_context()
            except TlsError as exc:
                raise ClusterctlError(str(exc), "run `clusterctl up` to issue them again") from None
            self._opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
            )

    def request(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        unreachable: list[str] = []
        scheme = "https" if self.tls is not None else "http"
        for address in self.addresses:
            url = f"{scheme}://{address}:{self.port}{path}"
            req = urllib.request.Request(url, data=data, method=method)
            req.add_header("Authorization", f"Bearer {self.token}")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                message = _error_text(exc)
                if exc.code in (502, 503, 504):
                    unreachable.append(f"{address}: {message}")
                    continue  # this node has no quorum: another may
                hint = "check the token in the state directory" if exc.code == 401 else ""
                raise AgentApiError(message, hint, exc.code) from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                unreachable.append(f"{address}: {getattr(exc, 'reason', exc)}")
        raise AgentApiError(
            "no agent answered (" + "; ".join(unreachable) + ")",
            "check `clusterctl status`; the agents need etcd quorum (2 of 3 nodes)",
            503,
        )

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/v1/status")

    def move(self, group: str, to: str | None) -> dict[str, Any]:
        return self.request("POST", f"/v1/groups/{group}/move", {"to": to})

    def cleanup(self, group: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/groups/{group}/cleanup", {})

    def clear(self, group: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/groups/{group}/clear", {})

    def backends(self) -> dict[str, Any]:
        return self.request("GET", "/v1/backends")

    def set_backend(self, node: str, **fields: Any) -> dict[str, Any]:
        return self.request("POST", f"/v1/backends/{node}", fields)

    def delete_backend(self, node: str) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/backends/{node}")

    def history(
        self, group: str | None = None, since: float | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        query: dict[str, Any] = {"limit": limit}
        if group is not None:
            query["group"] = group
        if since is not None:
            query["since"] = f"{since:.6f}"
        return self.request("GET", f"/v1/history?{urllib.parse.urlencode(query)}")

    def standby(self, node: str, on: bool) -> dict[str, Any]:
        action = "standby" if on else "unstandby"
        return self.request("POST", f"/v1/nodes/{node}/{action}", {})


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error") or exc.reason)
    except (ValueError, AttributeError, OSError):
        return f"HTTP {exc.code} {exc.reason}"


def unhealthy(status: dict[str, Any], group: str) -> str:
    """Why a cluster is not healthy by its agents' status (``GET /v1/status``), or '' when
    it is: quorum, every member online, ``group`` started on one node."""
    if not status.get("quorum"):
        return "no quorum"
    offline = [m["name"] for m in status.get("members", []) if not m.get("online")]
    if offline:
        return f"offline: {', '.join(offline)}"
    found = next((g for g in status.get("groups", []) if g.get("name") == group), None)
    if found is None or found.get("state") != "started" or not found.get("node"):
        return f"group {group} is {found.get('state') if found else 'missing'}"
    return ""
