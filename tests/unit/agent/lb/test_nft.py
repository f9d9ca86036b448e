"""Engine nft: rendering, weights, source hash, empty reject, apply-on-change, conntrack."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from clusterctl.agent.lb.command import LbError
from clusterctl.agent.lb.model import Backend, LbSpec
from clusterctl.agent.lb.nft import (
    HASH_SEED,
    TABLE,
    NftEngine,
    interleave,
    map_slots,
    parse_conntrack,
    render,
    slot_counts,
)
from clusterctl.agent.resources.runner import CommandResult
from tests.tools import require_tool

from .fakes import FakeRunner

RR = LbSpec("10.0.0.100", 80, 8080)
A = Backend("node1", "10.0.0.11", 8080, weight=100)
B = Backend("node2", "10.0.0.12", 8080, weight=50)
C = Backend("node3", "10.0.0.13", 8081, weight=50)


def map_of(script: str) -> list[str]:
    """The entries of the first dnat map, as 'i : addr . port' strings."""
    found = re.search(r"map \{ (.*?) \}", script)
    assert found, script
    return found.group(1).split(", ")


def test_roundrobin_script() -> None:
    script = render(RR, [B, A])
    lines = script.splitlines()
    # Atomic swap: create (no-op if present), delete, define, in one file.
    assert lines[1:4] == [
        f"table ip {TABLE} {{}}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
    ]
    dnat = (
        "ip daddr 10.0.0.100 tcp dport 80 dnat ip to numgen inc mod 2 "
        "map { 0 : 10.0.0.11 . 8080, 1 : 10.0.0.12 . 8080 }"
    )
    assert script.count(dnat) == 2  # prerouting and output
    assert "type nat hook prerouting priority -100; policy accept;" in script
    assert "type nat hook output priority -100; policy accept;" in script
    assert (
        "meta l4proto tcp ct status dnat ct original ip daddr 10.0.0.100 "
        "ct original proto-dst 80 masquerade" in script
    )
    assert "reject" not in script
    # Invalid packets of our flows are dropped before NAT, both directions.
    assert "type filter hook prerouting priority -150; policy accept;" in script
    assert "ip daddr 10.0.0.100 tcp dport 80 ct state invalid drop" in script
    assert (
        "ip saddr . tcp sport { 10.0.0.11 . 8080, 10.0.0.12 . 8080 } ct state invalid drop"
        in script
    )
    # Input order does not matter: the same set renders the same text.
    assert render(RR, [A, B]) == script


def test_roundrobin_ignores_weights_and_keeps_ports() -> None:
    assert map_of(render(RR, [A, B, C])) == [
        "0 : 10.0.0.11 . 8080",
        "1 : 10.0.0.12 . 8080",
        "2 : 10.0.0.13 . 8081",
    ]


def test_weighted_reduces_by_gcd_and_interleaves() -> None:
    spec = LbSpec("10.0.0.100", 80, 8080, algorithm="weighted")
    # 100:50:50 -> 2:1:1 -> 4 slots, spread out (smooth weighted round robin).
    assert [b.node for b in map_slots(spec, [A, B, C])] == ["node1", "node2", "node3", "node1"]
    assert "numgen inc mod 4 map" in render(spec, [A, B, C])


def test_slot_counts() -> None:
    assert slot_counts([100, 50, 50]) == [2, 1, 1]
    assert slot_counts([3, 3]) == [1, 1]
    assert slot_counts([7]) == [1]
    # Too many slots: scaled down to the cap, each keeps at least one, proportions kept.
    counts = slot_counts([256, 255, 1])
    assert sum(counts) <= 64 and counts[2] == 1 and abs(counts[0] - counts[1]) <= 1
    counts = slot_counts([1, 63, 200])
    assert sum(counts) <= 64 and counts[0] >= 1 and counts[2] > 3 * counts[1]
    # More backends than the cap: one slot each.
    assert slot_counts([1] * 70 + [2]) == [1] * 71
    assert slot_counts([1, 2] * 40) == [1] * 80
    with pytest.raises(ValueError):
        slot_counts([1, 0])


def test_interleave_is_smooth() -> None:
    out = interleave([A, B], [3, 1])
    assert [b.node for b in out] == ["node1", "node1", "node2", "node1"]


def test_source_hash() -> None:
    spec = LbSpec("10.0.0.100", 443, 8443, algorithm="source")
    script = render(spec, [A, B])
    assert (
        f"dnat ip to jhash ip saddr mod 2 seed {HASH_SEED} "
        "map { 0 : 10.0.0.11 . 8080, 1 : 10.0.0.12 . 8080 }" in script
    )
    assert "numgen" not in script


def test_no_live_backend_rejects_with_reset() -> None:
    script = render(RR, [])
    assert "type filter hook input priority 0; policy accept;" in script
    assert "ip daddr 10.0.0.100 tcp dport 80 reject with tcp reset" in script
    assert "dnat" not in script and "drop" not in script


def test_engine_applies_only_on_change() -> None:
    runner = FakeRunner()
    engine = NftEngine(runner)
    assert engine.apply(RR, [A, B]) is True
    assert engine.apply(RR, [B, A]) is False
    assert engine.apply(RR, [A]) is True
    assert [(argv, stdin) for argv, stdin in runner.calls] == [
        (["nft", "-f", "-"], render(RR, [A, B])),
        (["nft", "-f", "-"], render(RR, [A])),
    ]


def test_engine_failure_keeps_retrying() -> None:
    runner = FakeRunner()
    runner.results[("nft",)] = CommandResult(1, "", "Error: Could not process rule")
    engine = NftEngine(runner)
    with pytest.raises(LbError, match="Could not process rule"):
        engine.apply(RR, [A])
    runner.results.clear()
    assert engine.apply(RR, [A]) is True


def test_remove_and_current() -> None:
    runner = FakeRunner()
    engine = NftEngine(runner)
    engine.apply(RR, [A])
    listing = {"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": TABLE}}]}
    runner.results[("nft", "-j", "list")] = CommandResult(0, json.dumps(listing))
    assert engine.current() is True
    assert engine.apply(RR, [A]) is False
    # The table vanished behind our back: current() says so and apply() rewrites it.
    runner.results[("nft", "-j", "list")] = CommandResult(1, "", "Error: No such file")
    assert engine.current() is False
    assert engine.apply(RR, [A]) is True
    engine.remove()
    argv, stdin = runner.calls[-1]
    assert argv == ["nft", "-f", "-"]
    assert stdin == f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"
    assert engine.apply(RR, [A]) is True  # removed: the next apply writes again


CONNTRACK = """\
tcp      6 431999 ESTABLISHED src=192.168.1.5 dst=10.0.0.100 sport=51234 dport=80 \
src=10.0.0.11 dst=10.0.0.2 sport=8080 dport=51234 [ASSURED] mark=0 use=1
tcp      6 431990 ESTABLISHED src=192.168.1.6 dst=10.0.0.100 sport=40000 dport=80 \
src=10.0.0.11 dst=10.0.0.2 sport=8080 dport=40000 [ASSURED] mark=0 use=1
tcp      6 110 TIME_WAIT src=192.168.1.7 dst=10.0.0.100 sport=40001 dport=80 \
src=10.0.0.11 dst=10.0.0.2 sport=8080 dport=40001 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.0.0.2 dst=10.0.0.11 sport=50000 dport=8080 \
src=10.0.0.11 dst=10.0.0.2 sport=8080 dport=50000 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=192.168.1.5 dst=10.0.0.100 sport=51299 dport=80 \
src=10.0.0.12 dst=10.0.0.2 sport=8080 dport=51299 [ASSURED] mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 5 flow entries have been shown.
"""


def test_parse_conntrack() -> None:
    # Two via the VIP + one direct connection to the backend; TIME_WAIT does not count.
    assert parse_conntrack(CONNTRACK, "10.0.0.11", 8080) == 3
    assert parse_conntrack(CONNTRACK, "10.0.0.11", 8080, "10.0.0.100", 80) == 2
    assert parse_conntrack(CONNTRACK, "10.0.0.12", 8080, "10.0.0.100", 80) == 1
    assert parse_conntrack("", "10.0.0.12", 8080) == 0


def test_active_connections_through_runner() -> None:
    runner = FakeRunner()
    runner.results[("conntrack",)] = CommandResult(0, CONNTRACK)
    engine = NftEngine(runner)
    assert engine.active_connections(A, RR) == 2
    assert runner.calls[-1][0] == [
        "conntrack", "-L", "-p", "tcp", "--reply-src", "10.0.0.11", "--reply-port-src", "8080",
    ]  # fmt: skip
    runner.results[("conntrack",)] = CommandResult(127, "", "No such file or directory")
    with pytest.raises(LbError):
        engine.active_connections(A, RR)


@pytest.mark.parametrize("algorithm", ["weighted", "source", "empty"])
def test_script_passes_nft_check_mode(algorithm: str) -> None:
    """``nft -c`` parses and checks the script without changing the ruleset (as root: nft
    needs CAP_NET_ADMIN even to check)."""
    nft = require_tool("nft", "nftables")
    spec = LbSpec(
        "10.0.0.100", 80, 8080, algorithm="roundrobin" if algorithm == "empty" else algorithm
    )
    live = [] if algorithm == "empty" else [A, B, C]
    done = subprocess.run(
        [nft, "-c", "-f", "-"], input=render(spec, live),
        capture_output=True, text=True, timeout=5, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
