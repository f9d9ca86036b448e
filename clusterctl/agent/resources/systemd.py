"""A systemd unit as a resource: ``systemctl start/stop/is-active UNIT``."""

from __future__ import annotations

from clusterctl.agent.resources.base import Resource


class SystemdUnit(Resource):
    """Params: ``unit`` (e.g. ``nginx.service``)."""

    @property
    def unit(self) -> str:
        return str(self.spec.params["unit"])

    def start(self, timeout: float) -> None:
        self._check(["systemctl", "start", self.unit], timeout)

    def stop(self, timeout: float) -> None:
        self._check(["systemctl", "stop", self.unit], timeout)

    def monitor(self, timeout: float) -> bool:
        return self._run(["systemctl", "is-active", "--quiet", self.unit], timeout).ok
