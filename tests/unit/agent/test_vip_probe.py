"""A frozen holder's kernel keeps its VIP until the lifetime runs out: the next holder
probes the address (RFC 5227) and takes it only once nobody answers."""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from clusterctl.agent.config import ResourceSpec
from clusterctl.agent.resources.arp import answering_mac, probe_frame

from .agentsim import VIP, Sim, holder, web_group

LIFETIME = 1  # what the agent's config gives a VIP with the default 1 s lease
VIP_WITH_LIFETIME = ResourceSpec(
    "vip", "vip", {"address": "10.0.0.100", "prefix": 24, "interface": "eth0", "lifetime": 1}
)
NGINX = ResourceSpec("nginx", "systemd", {"unit": "nginx.service"}, prestart_safe=True)


def lifetime_sim() -> Sim:
    return Sim(group=web_group(resources=(VIP_WITH_LIFETIME, NGINX)))


def test_without_the_probe_a_frozen_holders_kernel_and_the_next_holder_overlap() -> None:
    """The simulation's check counts a frozen node's VIP until its kernel drops it: taking
    the VIP on lease expiry alone (no probe) is caught, so the next test can fail."""
    sim = lifetime_sim()
    for fake in sim.fake.values():
        fake.network = lambda address: None  # a probe that never hears anyone
    node = holder(sim)
    sim.freeze(node)
    with pytest.raises(AssertionError, match="two VIP holders"):
        sim.run(3.0)


def test_the_next_holder_takes_a_frozen_holders_vip_only_after_its_kernel_dropped_it() -> None:
    sim = lifetime_sim()
    node = holder(sim)
    sim.freeze(node)
    frozen_at = sim.clock.now()
    # Sim.check after every step: one holder at a time, the frozen node's kernel included
    sim.run_until(lambda: any(n != node for n in sim.vip_on()), timeout=5.0)
    (other,) = sim.vip_on()
    assert VIP not in sim.fake[node].addresses
    waited = [s for s in sim.sentences(other) if "still answers at" in s]
    assert waited and waited[0].startswith(
        f"web is free but {VIP} still answers at 02:00:00:00:00:0"
    ), sim.sentences(other)[-5:]
    assert sim.clock.now() - frozen_at < LIFETIME + 0.5  # within the kernel's lag, no more
    sim.thaw(node)  # fences: its VIP is long gone, and it stands by
    sim.run(1.0)
    assert sim.vip_on() == [other]


def test_a_crashed_holders_vip_is_taken_without_waiting() -> None:
    sim = lifetime_sim()
    node = holder(sim)
    sim.crash(node)
    sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=3.0)
    (other,) = sim.vip_on()
    assert not any("still answers" in s for s in sim.sentences(other))


def test_an_address_answered_for_good_is_taken_after_its_lifetime_and_a_warning(caplog) -> None:
    """Another host with the VIP's address (a conflict, or a router's proxy ARP) must not
    stop a failover for good: the wait ends after the lifetime plus the kernel's slack."""
    sim = lifetime_sim()
    for fake in sim.fake.values():
        fake.network = lambda address: "02:00:00:00:00:99"
    node = holder(sim)  # a first start probes nothing: there was no holder
    sim.crash(node)
    crashed_at = sim.clock.now()
    with caplog.at_level(logging.WARNING):
        sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=5.0)
    took = sim.clock.now() - crashed_at
    assert LIFETIME + 1.0 < took < LIFETIME + 3.0
    assert "another host has this address; taking it anyway" in caplog.text


def test_probe_frame_and_answers() -> None:
    mine, theirs = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    frame = probe_frame(mine, "10.0.0.100")
    eth_type, op = struct.unpack("!H", frame[12:14])[0], struct.unpack("!H", frame[20:22])[0]
    assert frame[:6] == b"\xff" * 6 and eth_type == 0x0806 and op == 1
    assert frame[28:32] == b"\0\0\0\0"  # RFC 5227: a probe claims no address
    assert frame[38:42] == socket.inet_aton("10.0.0.100")
    reply = (
        mine + theirs + struct.pack("!H", 0x0806)
        + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, theirs,
                      socket.inet_aton("10.0.0.100"), mine, b"\0\0\0\0")
    )  # fmt: skip
    assert answering_mac(reply, "10.0.0.100", mine) == "02:00:00:00:00:02"
    assert answering_mac(reply, "10.0.0.101", mine) is None  # another address
    assert answering_mac(frame, "10.0.0.100", mine) is None  # our own probe
    assert answering_mac(reply[:30], "10.0.0.100", mine) is None  # truncated


@pytest.fixture
def link(tmp_path):
    """Two network namespaces of this test's own joined by a veth pair (TEST-NET-1
    addresses: nothing leaves them), removed by exact name afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = f"ccp{os.getpid() % 100000}"
    a, b = f"{tag}a", f"{tag}b"
    setup = [
        f"ip netns add {a}", f"ip netns add {b}",
        f"ip link add {a} netns {a} type veth peer name {b} netns {b}",
        f"ip -n {a} link set {a} up", f"ip -n {b} link set {b} up",
        f"ip -n {a} addr add 192.0.2.1/24 dev {a}",
    ]  # fmt: skip
    try:
        for command in setup:
            subprocess.run(command.split(), check=True, capture_output=True)
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_namespace(ns: str, code: str) -> str:
    """Run Python ``code`` in namespace ``ns``; its output."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return proc.stdout.strip()


def probe_from(ns: str, interface: str, address: str) -> str:
    code = "from clusterctl.agent.resources.arp import find_address_owner as owner; "
    return in_namespace(ns, code + f"print(owner({interface!r}, {address!r}))")


def test_a_real_kernel_answers_the_probe_for_its_address_until_the_lifetime_runs_out(link):
    """The agent's netlink call sets a VIP with its lifetime; then no process runs in that
    namespace, as on a frozen node, and its kernel still answers the probe until then."""
    a, b = link
    mac_b = subprocess.run(
        ["ip", "netns", "exec", b, "cat", f"/sys/class/net/{b}/address"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert probe_from(a, a, "192.0.2.100") == "None"
    code = "from clusterctl.agent.resources.runner import SubprocessRunner as R; "
    no_such = code + "print(R().set_address('nosuch0', '192.0.2.100/24', 1, 1.0).rc)"
    assert in_namespace(b, no_such) == "1"  # a failure is an rc, never a traceback
    set_it = code + f"print(R().set_address({b!r}, '192.0.2.100/24', 1, 1.0))"  # as a VIP is
    assert in_namespace(b, set_it) == "CommandResult(rc=0, stdout='', stderr='')"
    added = time.monotonic()
    shown = subprocess.run(
        ["ip", "-n", b, "-4", "addr", "show", "dev", b], capture_output=True, text=True
    ).stdout
    assert "inet 192.0.2.100/24 scope global dynamic" in shown and "valid_lft 1sec" in shown
    assert probe_from(a, a, "192.0.2.100") == mac_b
    time.sleep(max(0.0, added + LIFETIME + 0.5 - time.monotonic()))  # the kernel drops it
    assert probe_from(a, a, "192.0.2.100") == "None"
    no_such = code + "print(R().set_address('nosuch0', '192.0.2.100/24', 1, 1.0).rc)"
    assert in_namespace(b, no_such) == "1"  # a failure is an rc, never a traceback
