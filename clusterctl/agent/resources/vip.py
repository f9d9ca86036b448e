"""A virtual IP address: ``ip addr add/del ADDR/PREFIX dev IFACE`` plus gratuitous ARP."""

from __future__ import annotations

import logging
from collections.abc import Callable

from clusterctl.agent.config import ResourceSpec
from clusterctl.agent.resources.arp import send_gratuitous_arp
from clusterctl.agent.resources.base import Resource
from clusterctl.agent.resources.runner import CommandRunner

log = logging.getLogger(__name__)

ArpSender = Callable[[str, str], None]


class VirtualIP(Resource):
    """Params: ``address`` (IPv4), ``prefix`` (int), ``interface``. Exclusive by type."""

    def __init__(
        self,
        spec: ResourceSpec,
        runner: CommandRunner,
        arp_sender: ArpSender = send_gratuitous_arp,
    ) -> None:
        super().__init__(spec, runner)
        self.arp_sender = arp_sender

    @property
    def cidr(self) -> str:
        return f"{self.spec.params['address']}/{self.spec.params['prefix']}"

    @property
    def interface(self) -> str:
        return str(self.spec.params["interface"])

    def start(self, timeout: float) -> None:
        if not self.monitor(timeout):
            self._check(["ip", "addr", "add", self.cidr, "dev", self.interface], timeout)
        try:
            self.arp_sender(self.interface, str(self.spec.params["address"]))
        except OSError as exc:
            # The address is up; neighbours will re-learn its MAC when their caches expire.
            # Not worth failing the group over, but worth a warning.
            log.warning("gratuitous ARP for %s failed: %s", self.cidr, exc)

    def stop(self, timeout: float) -> None:
        if self.monitor(timeout):
            self._check(["ip", "addr", "del", self.cidr, "dev", self.interface], timeout)

    def monitor(self, timeout: float) -> bool:
        result = self._run(["ip", "-o", "-4", "addr", "show", "dev", self.interface], timeout)
        return result.ok and f" {self.cidr} " in result.stdout
