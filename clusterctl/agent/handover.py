"""Forwarding during a planned move, so that no request is lost while the VIP changes hands.

The VIP is exclusive: the old holder removes it before the target adds it, and a request
sent in that gap (a few tens of ms) would be lost, because the clients' ARP caches still
point at the old holder. So, just before it drops the VIP, the old holder forwards every
packet for the VIP to the target's own address (which already runs the pre-started web
server), with full NAT so replies come back the same way. Until the target's gratuitous ARP
reaches the clients, they keep sending to the old holder, which forwards; afterwards they
talk to the target directly. The VIP itself is never on two nodes. The rule is removed a
few seconds later (connections it carries live on in conntrack). Best effort: without nft
the move still works, only with that short gap.
"""

from __future__ import annotations

import logging

from clusterctl.agent.resources.runner import CommandRunner, SubprocessRunner

log = logging.getLogger(__name__)

TABLE = "clusterctl_handover"
HOLD_SECONDS = 5.0  # how long the old holder keeps forwarding after a planned move


def forward_script(vip: str, target: str) -> str:
    """One atomic nft transaction: (re)create the table forwarding `vip` to `target`."""
    return (
        f"table ip {TABLE} {{}}\n"
        f"delete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n"
        "  chain pre { type nat hook prerouting priority dstnat; "
        f"ip daddr {vip} dnat to {target}; }}\n"
        "  chain post { type nat hook postrouting priority srcnat; "
        f"ip daddr {target} ct status dnat masquerade; }}\n"
        "}\n"
    )


REMOVE_SCRIPT = f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"


class Handover:
    """Installs and later removes the forwarding table. Never raises."""

    def __init__(self, runner: CommandRunner | None = None) -> None:
        self.runner = runner or SubprocessRunner()
        self.until: float | None = None  # when to remove the table (monotonic clock)

    def forward(self, vip: str, target: str, now: float, timeout: float = 1.0) -> bool:
        result = self.runner.run(["nft", "-f", "-"], timeout, stdin=forward_script(vip, target))
        if not result.ok:
            log.warning("hand-over forwarding not installed: %s", result.stderr.strip())
            return False
        self.until = now + HOLD_SECONDS
        return True

    def remove(self, timeout: float = 1.0) -> None:
        result = self.runner.run(["nft", "-f", "-"], timeout, stdin=REMOVE_SCRIPT)
        if not result.ok:
            log.warning("hand-over forwarding not removed: %s", result.stderr.strip())
        self.until = None

    def expire(self, now: float, timeout: float = 1.0) -> bool:
        """Remove the table once its time is up; return whether it was removed now."""
        if self.until is not None and now >= self.until:
            self.remove(timeout)
            return True
        return False
