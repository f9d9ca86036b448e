"""Engine ``nft``: kernel full-NAT L4 balancing in one nftables table (docs/machine-notes.md).

The whole table is re-rendered and swapped in ONE ``nft -f`` transaction: the script first
creates the table (a no-op if it exists) so that ``delete table`` cannot fail, deletes it,
and defines it again. nft applies a file atomically, so packets see either the old ruleset
or the new one, never an empty table in between. Established connections are unaffected by
a swap: their NAT binding lives in conntrack, not in the rules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import reduce

from clusterctl.agent.lb.command import LbError, check
from clusterctl.agent.lb.model import Backend, BackendCounters, LbSpec
from clusterctl.agent.resources.runner import CommandRunner

TABLE = "clusterctl_lb"
MAX_SLOTS = 64  # map entries for the weighted algorithm; bounds the ruleset's size
# jhash's seed is random unless given. A fixed one keeps each client on the same backend
# across rebuilds and across a failover to another LB node (for an unchanged backend set).
HASH_SEED = "0x636c7573"


def slot_counts(weights: Sequence[int], cap: int = MAX_SLOTS) -> list[int]:
    """How many map slots each weight gets: proportional, reduced by their gcd, at most
    ``max(cap, len(weights))`` in total and at least 1 each (weights must be > 0)."""
    if not weights:
        return []
    if any(w <= 0 for w in weights):
        raise ValueError("weights must be > 0")
    g = reduce(math.gcd, weights)
    counts = [w // g for w in weights]
    if sum(counts) <= cap:
        return counts
    cap = max(cap, len(weights))
    total = sum(weights)
    exact = [w * cap / total for w in weights]
    counts = [max(1, math.floor(e)) for e in exact]
    # Largest remainder first; the max(1, ...) above can overshoot, then take back from the
    # most over-served. Ties go to the earlier backend so the result is deterministic.
    while sum(counts) < cap:
        i = max(range(len(counts)), key=lambda k: (exact[k] - counts[k], -k))
        counts[i] += 1
    while sum(counts) > cap:
        i = max(
            (k for k in range(len(counts)) if counts[k] > 1),
            key=lambda k: (counts[k] - exact[k], -k),
        )
        counts[i] -= 1
    g = reduce(math.gcd, counts)
    return [c // g for c in counts]


def interleave(items: Sequence[Backend], counts: Sequence[int]) -> list[Backend]:
    """Spread ``counts[i]`` copies of ``items[i]`` evenly (nginx's smooth weighted round
    robin), so a weight 3:1 map reads a a b a, not a a a b: ``numgen inc`` walks the map in
    order, and runs of one backend would send it bursts of consecutive connections."""
    current = [0] * len(items)
    total = sum(counts)
    out: list[Backend] = []
    for _ in range(total):
        for i, c in enumerate(counts):
            current[i] += c
        best = max(range(len(items)), key=lambda k: (current[k], -k))
        current[best] -= total
        out.append(items[best])
    return out


def map_slots(spec: LbSpec, live: Sequence[Backend]) -> list[Backend]:
    """The map's entries in slot order: one per backend for ``roundrobin`` and ``source``,
    proportional to weights for ``weighted``. ``live`` is sorted by node first."""
    ordered = sorted(live, key=lambda b: b.node)
    if spec.algorithm == "weighted":
        return interleave(ordered, slot_counts([b.weight for b in ordered]))
    return ordered


def render(spec: LbSpec, live: Sequence[Backend]) -> str:
    """The complete nft script for ``spec`` with ``live`` backends (see ``live_backends``).

    With no live backend, new connections to the frontend are answered with a TCP reset
    (a filter rule on input: without a dnat the packet is delivered locally, still addressed
    to the VIP) instead of being silently dropped, so clients fail fast.
    """
    vip, port = spec.address, spec.port
    match = f"ip daddr {vip} tcp dport {port}"
    slots = map_slots(spec, live)
    lines = [
        f"# clusterctl load balancer {vip}:{port} -> {len(live)} backend(s), "
        f"{spec.algorithm}. Generated: do not edit.",
        f"table ip {TABLE} {{}}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
    ]
    if slots:
        entries = ", ".join(f"{i} : {b.address} . {b.port}" for i, b in enumerate(slots))
        if spec.algorithm == "source":
            selector = f"jhash ip saddr mod {len(slots)} seed {HASH_SEED}"
        else:
            selector = f"numgen inc mod {len(slots)}"
        dnat = f"{match} dnat ip to {selector} map {{ {entries} }}"
        # Remote clients come in through prerouting; the LB node's own clients through
        # output. Both need the same dnat.
        for chain, hook, prio in (("prerouting", "prerouting", -100), ("output", "output", -100)):
            lines += [
                f"\tchain {chain} {{",
                f"\t\ttype nat hook {hook} priority {prio}; policy accept;",
                f"\t\t{dnat}",
                "\t}",
            ]
        # Packets conntrack calls invalid (e.g. out of its TCP window under load) are not
        # NATed: to the VIP they would reach this node's own stack, which answers with a
        # reset and kills the client's connection; from a backend, the reset kills the
        # backend's side. Dropping them lets TCP retransmit instead (kube-proxy does the same).
        replies = ", ".join(sorted({f"{b.address} . {b.port}" for b in live}))
        lines += [
            "\tchain invalid {",
            "\t\ttype filter hook prerouting priority -150; policy accept;",
            f"\t\t{match} ct state invalid drop",
            f"\t\tip saddr . tcp sport {{ {replies} }} ct state invalid drop",
            "\t}",
        ]
        # Full NAT: backends answer the LB, not the client, so replies are un-NATed here even
        # when client and backend share a subnet. Only connections dnat'ed from our frontend
        # are masqueraded, never the node's other traffic to the same hosts.
        lines += [
            "\tchain postrouting {",
            "\t\ttype nat hook postrouting priority 100; policy accept;",
            f"\t\tmeta l4proto tcp ct status dnat ct original ip daddr {vip} "
            f"ct original proto-dst {port} masquerade",
            "\t}",
        ]
    else:
        lines += [
            "\tchain input {",
            "\t\ttype filter hook input priority 0; policy accept;",
            f"\t\t{match} reject with tcp reset",
            "\t}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def parse_conntrack(
    text: str, address: str, port: int, vip: str | None = None, vip_port: int | None = None
) -> int:
    """Count ESTABLISHED TCP entries of ``conntrack -L`` output whose reply comes from
    ``address:port`` (i.e. connections NATed to that backend) and, if given, whose original
    destination is ``vip:vip_port``. Other lines (the summary, other states) are ignored."""
    count = 0
    for line in text.splitlines():
        tokens = line.split()
        if "ESTABLISHED" not in tokens:
            continue
        src = [t[4:] for t in tokens if t.startswith("src=")]
        dst = [t[4:] for t in tokens if t.startswith("dst=")]
        sport = [t[6:] for t in tokens if t.startswith("sport=")]
        dport = [t[6:] for t in tokens if t.startswith("dport=")]
        if len(src) < 2 or len(dst) < 2 or len(sport) < 2 or len(dport) < 2:
            continue
        if src[1] != address or sport[1] != str(port):
            continue
        if vip is not None and dst[0] != vip:
            continue
        if vip_port is not None and dport[0] != str(vip_port):
            continue
        count += 1
    return count


class NftEngine:
    """Applies rendered scripts through ``runner`` (``nft -f -`` with the script on stdin).

    ``apply`` is a no-op while the rendered text equals the last one applied by this engine;
    ``remove`` and a failed apply forget it, so the next ``apply`` always writes. An engine
    created after an agent restart re-applies once (harmless: the swap is atomic).
    """

    checks_backends = False  # the agent checks them; only the healthy ones are balanced

    def __init__(self, runner: CommandRunner, timeout: float = 5.0) -> None:
        self.runner = runner
        self.timeout = timeout
        self.last_applied: str | None = None

    def converge(
        self, spec: LbSpec, registered: Sequence[Backend], live: Sequence[Backend]
    ) -> None:
        self.apply(spec, live)

    def in_place(self, timeout: float | None = None) -> bool:
        return self.current(timeout)

    def counters(
        self, spec: LbSpec, backends: Sequence[Backend], timeout: float
    ) -> dict[str, BackendCounters]:
        counts: dict[str, BackendCounters] = {}
        for b in backends:
            try:
                counts[b.node] = BackendCounters(self.active_connections(b, spec, timeout))
            except (LbError, OSError):
                counts[b.node] = BackendCounters(None)
        return counts

    def apply(self, spec: LbSpec, live: Sequence[Backend], timeout: float | None = None) -> bool:
        """Make the kernel balance ``spec`` over ``live``. Returns whether nft was called.
        Raises ``LbError`` if nft rejects the script (the previous ruleset stays)."""
        script = render(spec, live)
        if script == self.last_applied:
            return False
        self.last_applied = None
        argv = ["nft", "-f", "-"]
        check(self.runner.run(argv, self._t(timeout), stdin=script), argv)
        self.last_applied = script
        return True

    def remove(self, timeout: float | None = None) -> None:
        """Delete the table (idempotent: the script creates it first if it is absent)."""
        self.last_applied = None
        argv = ["nft", "-f", "-"]
        script = f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"
        check(self.runner.run(argv, self._t(timeout), stdin=script), argv)

    def current(self, timeout: float | None = None) -> bool:
        """Whether the table is present in the kernel. If it is not (deleted behind our
        back, e.g. by a firewall reload), the next ``apply`` writes it again."""
        result = self.runner.run(["nft", "-j", "list", "table", "ip", TABLE], self._t(timeout))
        present = False
        if result.ok:
            try:
                items = json.loads(result.stdout).get("nftables", [])
                present = any(
                    isinstance(i, dict) and i.get("table", {}).get("name") == TABLE for i in items
                )
            except (json.JSONDecodeError, AttributeError):
                present = False
        if not present:
            self.last_applied = None
        return present

    def active_connections(
        self, backend: Backend, spec: LbSpec | None = None, timeout: float | None = None
    ) -> int:
        """Established connections NATed to ``backend`` (for draining). With full NAT the
        conntrack entry's ORIGINAL destination is the VIP, so we filter on the REPLY source
        (the backend). Raises ``LbError`` if conntrack fails (e.g. not installed)."""
        argv = [
            "conntrack", "-L", "-p", "tcp",
            "--reply-src", backend.address, "--reply-port-src", str(backend.port),
        ]  # fmt: skip
        result = check(self.runner.run(argv, self._t(timeout)), argv)
        return parse_conntrack(
            result.stdout,
            backend.address,
            backend.port,
            spec.address if spec else None,
            spec.port if spec else None,
        )

    def _t(self, timeout: float | None) -> float:
        return max(self.timeout if timeout is None else timeout, 0.01)
