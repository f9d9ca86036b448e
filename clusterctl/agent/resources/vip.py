"""A virtual IP address: set and refreshed over netlink, removed with `ip addr del`, announced
with gratuitous ARP, probed before it is taken from a holder that stopped renewing."""

from __future__ import annotations

import logging
from collections.abc import Callable

from clusterctl.agent.config import ResourceSpec
from clusterctl.agent.resources.arp import send_gratuitous_arp
from clusterctl.agent.resources.base import Resource, ResourceError
from clusterctl.agent.resources.runner import CommandRunner

log = logging.getLogger(__name__)

ArpSender = Callable[[str, str], None]


class VirtualIP(Resource):
    """Params: ``address`` (IPv4), ``prefix`` (int), ``interface``, optional ``lifetime``
    (whole seconds) and ``announce_interface`` (where ARP announces and probes the address,
    default ``interface``: a VIP on ``lo`` is announced on the node's network interface).
    Exclusive by type.

    With a lifetime the address is added with ``valid_lft``: the kernel itself deletes it
    ``lifetime`` to ``lifetime + 1`` s after the agent last refreshed it (``keepalive``, after
    every lease renewal). So a holder whose agent is frozen or hung loses the VIP even though
    nothing on the node runs any more - a fence that needs no process of ours.
    """

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

    @property
    def announce_interface(self) -> str:
        return str(self.spec.params.get("announce_interface") or self.interface)

    @property
    def lifetime(self) -> int | None:
        value = self.spec.params.get("lifetime")
        return int(value) if value else None

    def _set_address(self, timeout: float) -> None:
        """Add the address, or refresh its lifetime: one call does both (a replace), so
        keepalive needs no state of its own. In-process, never by a child (netlink.py)."""
        result = self.runner.set_address(self.interface, self.cidr, self.lifetime, timeout)
        if not result.ok:
            raise ResourceError(result.stderr.strip() or f"setting {self.cidr} failed")

    def start(self, timeout: float) -> None:
        if self.lifetime or not self.monitor(timeout):
            self._set_address(timeout)
        try:
            self.arp_sender(self.announce_interface, str(self.spec.params["address"]))
        except OSError as exc:
            # The address is up; neighbours will re-learn its MAC when their caches expire.
            # Not worth failing the group over, but worth a warning.
            log.warning("gratuitous ARP for %s failed: %s", self.cidr, exc)

    def owner_elsewhere(self) -> str | None:
        """The MAC of another host that still answers ARP for the address (a frozen
        holder's kernel does until the lifetime it was given runs out), or None. A probe
        that cannot be sent is logged and answers None: it must not stop a failover."""
        try:
            return self.runner.address_owner(
                self.announce_interface, str(self.spec.params["address"])
            )
        except OSError as exc:
            log.warning("ARP probe for %s failed: %s", self.cidr, exc)
            return None

    def keepalive(self, timeout: float) -> None:
        """Push the kernel's deadline for the address out again (no-op without lifetime)."""
        if self.lifetime:
            self._set_address(timeout)

    def stop(self, timeout: float) -> None:
        if self.monitor(timeout):
            self._check(["ip", "addr", "del", self.cidr, "dev", self.interface], timeout)

    def monitor(self, timeout: float) -> bool:
        result = self._run(["ip", "-o", "-4", "addr", "show", "dev", self.interface], timeout)
        return result.ok and f" {self.cidr} " in result.stdout
