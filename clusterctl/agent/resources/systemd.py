"""A systemd unit as a resource: ``systemctl start/stop/is-active UNIT``."""

from __future__ import annotations

import logging

from clusterctl.agent.resources.base import Resource

log = logging.getLogger(__name__)

# `systemctl is-active`: 0 active, 3 not active (inactive, failed, activating, ...), 4 no such
# unit. Anything else (1: systemd did not answer; 124: our timeout) says nothing of the unit.
NOT_ACTIVE = (3, 4)


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
        """False only when systemd says the unit is not active. While systemd reloads its
        units (`daemon-reload`, as every `up` and every package install does) it answers
        nothing for a few hundred milliseconds, and the monitor's short timeout counted that
        as a failed service: restarted in place, and a fencing group whose agent stopped
        during that restart was fenced on a healthy node (bench fence, seen during `up`)."""
        result = self._run(["systemctl", "is-active", "--quiet", self.unit], timeout)
        if result.ok or result.rc in NOT_ACTIVE:
            return result.ok
        log.warning("%s: systemd gave no state (rc %s): checked again later", self.unit, result.rc)
        return True
