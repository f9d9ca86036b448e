"""Resources against a fake command runner; gratuitous ARP frames; the real runner."""

from __future__ import annotations

import struct
import sys
import time

import pytest

from clusterctl.agent.clock import FakeClock
from clusterctl.agent.config import GroupSpec, ResourceSpec
from clusterctl.agent.group import GroupRunner
from clusterctl.agent.resources import ResourceError, SubprocessRunner, build_resource
from clusterctl.agent.resources.arp import gratuitous_arp_frames
from clusterctl.agent.resources.vip import VirtualIP

from .agentsim import FakeNode

VIP_SPEC = ResourceSpec("vip", "vip", {"address": "10.0.0.100", "prefix": 24, "interface": "eth0"})
WEB_SPEC = ResourceSpec("nginx", "systemd", {"unit": "nginx.service"}, prestart_safe=True)


@pytest.fixture
def node() -> FakeNode:
    return FakeNode("node1", FakeClock())


def test_vip_start_stop_monitor(node: FakeNode) -> None:
    arps: list[tuple[str, str]] = []
    vip = build_resource(VIP_SPEC, node, arp_sender=lambda i, a: arps.append((i, a)))
    assert vip.exclusive and not vip.prestart_safe
    assert vip.monitor(1.0) is False
    vip.start(1.0)
    vip.start(1.0)  # idempotent: no second "ip addr add"
    assert vip.monitor(1.0) is True
    assert arps == [("eth0", "10.0.0.100")] * 2
    vip.stop(1.0)
    vip.stop(1.0)
    assert vip.monitor(1.0) is False
    actions = [c for _, c in node.log if " show " not in c]
    assert actions == ["ip addr add 10.0.0.100/24 dev eth0", "ip addr del 10.0.0.100/24 dev eth0"]


def test_vip_arp_failure_is_not_fatal(node: FakeNode) -> None:
    def broken(interface: str, address: str) -> None:
        raise PermissionError("CAP_NET_RAW missing")

    vip = build_resource(VIP_SPEC, node, arp_sender=broken)
    vip.start(1.0)
    assert vip.monitor(1.0)


def test_systemd_unit(node: FakeNode) -> None:
    web = build_resource(WEB_SPEC, node)
    assert web.prestart_safe and not web.exclusive
    web.start(1.0)
    assert web.monitor(1.0)
    node.units.clear()
    assert not web.monitor(1.0)
    node.fail_start.add("nginx.service")
    with pytest.raises(ResourceError, match=r"systemctl start nginx.service failed \(rc 1\)"):
        web.start(1.0)
    web.stop(1.0)
    assert node.log[-1][1] == "systemctl stop nginx.service"


def test_group_order_and_exclusive_first_fencing(node: FakeNode) -> None:
    arp = lambda i, a: None  # noqa: E731
    group = GroupRunner(
        GroupSpec("web", (VIP_SPEC, WEB_SPEC)),
        [build_resource(VIP_SPEC, node, arp), build_resource(WEB_SPEC, node)],
    )
    group.start(group.resources, lambda r: 1.0, lambda: None)
    group.stop(lambda r: 1.0)
    group.start(group.resources, lambda r: 1.0, lambda: None)
    group.stop(lambda r: 1.0, exclusive_first=True)
    actions = [c for _, c in node.log if " show " not in c]
    assert actions == [
        "ip addr add 10.0.0.100/24 dev eth0",
        "systemctl start nginx.service",
        "systemctl stop nginx.service",  # normal stop: reverse order
        "ip addr del 10.0.0.100/24 dev eth0",
        "ip addr add 10.0.0.100/24 dev eth0",
        "systemctl start nginx.service",
        "ip addr del 10.0.0.100/24 dev eth0",  # fencing: the exclusive VIP first
        "systemctl stop nginx.service",
    ]


def test_gratuitous_arp_frames() -> None:
    mac = bytes.fromhex("020000000001")
    request, reply = gratuitous_arp_frames(mac, "10.0.0.100")
    for frame, op in ((request, 1), (reply, 2)):
        assert len(frame) == 42
        assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac
        assert frame[12:14] == b"\x08\x06"
        htype, ptype, hlen, plen, opcode = struct.unpack("!HHBBH", frame[14:22])
        assert (htype, ptype, hlen, plen, opcode) == (1, 0x0800, 6, 4, op)
        assert frame[22:28] == mac
        assert frame[28:32] == frame[38:42] == bytes([10, 0, 0, 100])  # sender = target = VIP
    with pytest.raises(ValueError):
        gratuitous_arp_frames(b"\x00", "10.0.0.1")


def test_subprocess_runner_kills_at_timeout() -> None:
    runner = SubprocessRunner()
    assert runner.run([sys.executable, "-c", "print('hi')"], timeout=5).stdout == "hi\n"
    start = time.monotonic()
    result = runner.run([sys.executable, "-c", "import time; time.sleep(10)"], timeout=0.3)
    assert result.rc == 124 and time.monotonic() - start < 3
    assert runner.run(["/nonexistent/command"], timeout=1).rc == 127


def test_vip_with_lifetime_is_added_and_refreshed_with_valid_lft(node: FakeNode) -> None:
    spec = ResourceSpec(
        "vip",
        "vip",
        {"address": "10.0.0.100", "prefix": 24, "interface": "eth0", "lifetime": 1},
    )
    vip = VirtualIP(spec, node, arp_sender=lambda iface, addr: None)
    vip.start(1.0)
    vip.keepalive(1.0)
    expected = "ip addr replace 10.0.0.100/24 dev eth0 valid_lft 1 preferred_lft 1"
    assert [c for _, c in node.log] == [expected, expected]
    assert node.expires["10.0.0.100/24"] == pytest.approx(node.clock.now() + 1.25)  # + lag


def test_vip_lifetime_shorter_than_the_fence_is_refused():
    import pytest

    from clusterctl.agent.config import ConfigError, config_from_dict

    group = {
        "name": "web",
        "resources": [
            {"name": "vip", "type": "vip", "address": "10.0.0.100", "prefix": 24,
             "interface": "eth0", "lifetime": 1},
        ],
    }  # fmt: skip
    data = {
        "node": "n1",
        "etcd_endpoints": ["http://127.0.0.1:2379"],
        "lease_ttl": 3.0,
        "renew_interval": 0.5,
        "renew_timeout": 0.25,
        "fence_margin": 0.5,
        "api_port": 0,
        "groups": [group],
    }
    with pytest.raises(ConfigError, match="vip lifetime >= lease_ttl - fence_margin"):
        config_from_dict(data)


def test_a_fencing_stop_drops_vips_before_any_other_exclusive_resource() -> None:
    """A VIP goes in milliseconds and makes this node answer for the group: it must not wait
    behind a load balancer's stop (an exclusive resource after it in start order)."""
    order: list[str] = []

    class Tracked:
        def __init__(self, name: str, type_: str, exclusive: bool) -> None:
            self.name = name
            self.spec = ResourceSpec(name, type_, {}, exclusive=exclusive)
            self.exclusive = exclusive

        def stop(self, timeout: float) -> None:
            order.append(self.name)

    resources = [
        Tracked("vip", "vip", True),
        Tracked("lb", "lb", True),
        Tracked("web", "systemd", False),
    ]
    group = GroupRunner(GroupSpec("web", tuple(r.spec for r in resources)), resources)  # type: ignore[arg-type]
    group.started = {"vip", "lb", "web"}
    assert group.stop(lambda r: 1.0, exclusive_first=True) == []
    assert order == ["vip", "lb", "web"]


@pytest.mark.parametrize(
    ("rc", "healthy"), [(0, True), (3, False), (4, False), (1, True), (124, True)]
)
def test_a_unit_fails_its_monitor_only_when_systemd_says_it_is_not_active(rc, healthy) -> None:
    """rc 1 (systemd busy in a daemon-reload) or 124 (our timeout) says nothing of the unit."""
    from clusterctl.agent.config import ResourceSpec
    from clusterctl.agent.resources.runner import CommandResult
    from clusterctl.agent.resources.systemd import SystemdUnit

    class Answers:
        def run(self, argv, timeout, stdin=None):  # noqa: ANN001, ANN202
            return CommandResult(rc)

    spec = ResourceSpec(name="web", type="systemd", params={"unit": "nginx.service"})
    assert SystemdUnit(spec, Answers()).monitor(0.2) is healthy
