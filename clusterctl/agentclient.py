"""The controller's client of the agents' REST API (docs/agent-api.md).

The calls themselves are the one client every caller shares (``clusterctl/agent/apiclient.py``,
the collection's module_utils/agent_api.py): the nodes are asked in turn until one answers.
This layer adds what an operator at the command line needs: an error is a ``ClusterctlError``
with the API's own one-line message and a hint. With ``tls`` (the cluster's CA and the
controller's certificate) it speaks https and accepts only a server certificate of the
cluster's CA naming the node's address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusterctl.agent import apiclient
from clusterctl.agent.tls import TlsError, TlsFiles
from clusterctl.errors import ClusterctlError

API_PORT = apiclient.API_PORT
QUORUM_HINT = "check `clusterctl status`; the agents need etcd quorum (2 of 3 nodes)"


class AgentApiError(ClusterctlError):
    """The API answered with an error (4xx/5xx) or no node answered (status 503)."""

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
    _api: apiclient.AgentApi = field(init=False, repr=False)

    def __post_init__(self) -> None:
        context = None
        if self.tls is not None:
            try:
                context = self.tls.client_context()
            except TlsError as exc:
                raise ClusterctlError(str(exc), "run `clusterctl up` to issue them again") from None
        urls = apiclient.base_urls(self.addresses, self.port, tls=self.tls is not None)
        self._api = apiclient.AgentApi(urls, self.token, self.timeout, context)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self._api, method)(*args, **kwargs)
        except apiclient.AgentUnavailableError as exc:
            raise AgentApiError(f"no agent answered ({exc.error})", QUORUM_HINT, 503) from None
        except apiclient.AgentApiError as exc:
            hint = "check the token in the state directory" if exc.status == 401 else ""
            raise AgentApiError(str(exc.error or exc), hint, exc.status or 0) from None

    def request(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        return self._call("request", method, path, body)

    def status(self) -> dict[str, Any]:
        return self._call("status")

    def move(self, group: str, to: str | None) -> dict[str, Any]:
        return self._call("move", group, to)

    def cleanup(self, group: str) -> dict[str, Any]:
        return self._call("cleanup", group)

    def clear(self, group: str) -> dict[str, Any]:
        return self._call("clear", group)

    def backends(self) -> dict[str, Any]:
        return self._call("backends")

    def set_backend(
        self, node: str, weight: int | None = None, state: str | None = None
    ) -> dict[str, Any]:
        return self._call("set_backend", node, weight=weight, state=state)

    def delete_backend(self, node: str) -> dict[str, Any]:
        return self._call("delete_backend", node)

    def history(
        self, group: str | None = None, since: float | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        return self._call("history", group, since, limit)

    def confirm_fenced(self, node: str) -> dict[str, Any]:
        return self._call("confirm_fenced", node)

    def standby(self, node: str, on: bool) -> dict[str, Any]:
        return self._call("standby" if on else "unstandby", node)


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
