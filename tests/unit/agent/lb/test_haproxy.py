"""Engine haproxy: config rendering, runtime API parsing/client, reload vs runtime commands."""

from __future__ import annotations

import grp
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from clusterctl.agent.lb.command import LbError
from clusterctl.agent.lb.haproxy import (
    BACKEND,
    HaproxyEngine,
    HaproxyRuntime,
    parse_servers_state,
    parse_stat,
    render_config,
    runtime_commands,
    stat_health,
    structure_hash,
)
from clusterctl.agent.lb.model import Backend, LbSpec
from clusterctl.agent.resources.runner import CommandResult
from tests.tools import require_tool

from .fakes import FakeHaproxySocket, FakeRunner

SPEC = LbSpec(
    "10.0.0.100", 80, 8080, engine="haproxy", mode="http", check_path="/healthz",
    expected_status=204, inter=0.5, rise=2, fall=3,
)  # fmt: skip
N1 = Backend("node1", "10.0.0.11", 8080, weight=100)
N2 = Backend("node2", "10.0.0.12", 8080, weight=50, state="draining")
N3 = Backend("node3", "10.0.0.13", 8080, weight=10, state="disabled")

HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
    "srv_agent_port"
)


def state_line(sid: int, name: str, addr: str, op: int, admin: int, weight: int) -> str:
    fixed = "12 15 3 4 6 0 0 0 - 8080 - 0 0 - - 0"
    return f"3 {BACKEND} {sid} {name} {addr} {op} {admin} {weight} {weight} {fixed}"


def servers_state(*lines: str) -> str:
    """``show servers state`` as HAProxy 2.6 prints it (checked against 2.6.12)."""
    return "1\n" + HEADER + "\n" + "".join(f"{ln}\n" for ln in lines) + "\n"


# The state HAProxy reports right after loading render_config(SPEC, [N1, N2, N3]).
AS_CONFIGURED = servers_state(
    state_line(1, "node1", "10.0.0.11", 2, 0, 100),
    state_line(2, "node2", "10.0.0.12", 2, 0, 0),  # draining: weight 0 in the file
    state_line(3, "node3", "10.0.0.13", 0, 5, 10),  # disabled: CMAINT | FMAINT
)


def test_config_lines() -> None:
    cfg = render_config(SPEC, [N3, N1, N2]).splitlines()
    for line in [
        "\tstats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners",
        "\tmode http",
        "\tretries 3",
        "\toption redispatch",
        "\ttimeout check 1000ms",
        "frontend fe_clusterctl",
        "\tbind 10.0.0.100:80",
        f"backend {BACKEND}",
        "\tbalance roundrobin",
        "\toption httpchk GET /healthz",
        "\thttp-check expect status 204",
        "\tserver node1 10.0.0.11:8080 check inter 500ms rise 2 fall 3 weight 100",
        "\tserver node2 10.0.0.12:8080 check inter 500ms rise 2 fall 3 weight 0",
        "\tserver node3 10.0.0.13:8080 check inter 500ms rise 2 fall 3 weight 10 disabled",
    ]:
        assert line in cfg, line
    servers = [ln.split()[1] for ln in cfg if ln.startswith("\tserver ")]
    assert servers == ["node1", "node2", "node3"]
    assert "hash-type consistent" not in "\n".join(cfg)


def test_config_tcp_mode_and_source() -> None:
    spec = LbSpec("10.0.0.100", 80, 8080, engine="haproxy", algorithm="source")
    cfg = render_config(spec, [N1])
    assert "\tmode tcp\n" in cfg and "\toption tcplog\n" in cfg
    assert "\tbalance source\n\thash-type consistent\n" in cfg
    assert "\toption httpchk GET /\n" in cfg  # backends are web servers even in tcp mode


def test_structure_ignores_weights_and_states() -> None:
    base = structure_hash(SPEC, [N1, N2], "/s")
    assert structure_hash(SPEC, [N1.__class__("node1", "10.0.0.11", 8080, 7), N2], "/s") == base
    assert structure_hash(SPEC, [N1], "/s") != base
    assert structure_hash(SPEC, [N1, Backend("node2", "10.0.0.99", 8080)], "/s") != base


def test_parse_servers_state() -> None:
    states = parse_servers_state(AS_CONFIGURED)
    assert [(s.name, s.address, s.port, s.weight, s.runtime_state) for s in states] == [
        ("node1", "10.0.0.11", 8080, 100, "ready"),
        ("node2", "10.0.0.12", 8080, 0, "ready"),
        ("node3", "10.0.0.13", 8080, 10, "maint"),
    ]
    # Config-disabled then `set server state ready`: CMAINT (4) stays but the server serves.
    again = parse_servers_state(servers_state(state_line(3, "node3", "10.0.0.13", 2, 4, 10)))
    assert again[0].runtime_state == "ready"
    drained = parse_servers_state(servers_state(state_line(1, "node1", "10.0.0.11", 2, 8, 100)))
    assert drained[0].runtime_state == "drain"


def test_parse_stat() -> None:
    text = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
        "wretr,wredis,status,weight,\n"
        "fe_clusterctl,FRONTEND,,,3,5,2000,9,0,0,0,0,0,,,,,OPEN,,\n"
        f"{BACKEND},node1,0,0,2,4,,7,0,0,,0,,0,0,0,0,UP,100,\n"
        f"{BACKEND},node2,0,0,1,1,,2,0,0,,0,,0,0,0,0,DRAIN,0,\n"
        f"{BACKEND},BACKEND,0,0,3,5,200,9,0,0,0,0,,0,0,0,0,UP,100,\n"
    )
    stats = parse_stat(text)
    assert [(s.name, s.status, s.sessions, s.weight) for s in stats] == [
        ("node1", "UP", 2, 100),
        ("node2", "DRAIN", 1, 0),
    ]


def test_runtime_commands_only_for_differences() -> None:
    actual = parse_servers_state(AS_CONFIGURED)
    # As rendered: the draining server still needs its drain flag; nothing else.
    assert runtime_commands([N1, N2, N3], actual) == [("node2", "state", "drain")]
    wanted = [
        Backend("node1", "10.0.0.11", 8080, weight=30),
        Backend("node2", "10.0.0.12", 8080, weight=50),
        Backend("node3", "10.0.0.13", 8080, weight=10, state="draining"),
        Backend("node9", "10.0.0.19", 8080),  # not running: left to a reload
    ]
    assert runtime_commands(wanted, actual) == [
        ("node1", "weight", 30),
        ("node2", "weight", 50),
        ("node3", "state", "drain"),
    ]


class Haproxy:
    """The fake HAProxy behind the socket: answers show commands, applies set commands."""

    def __init__(self, state: str) -> None:
        self.states = {s.name: s for s in parse_servers_state(state)}
        self.refuse: str | None = None

    def __call__(self, command: str) -> str:
        words = command.split()
        if command.startswith("show servers state"):
            lines = [
                state_line(i, s.name, s.address, s.op_state, s.admin_state, s.weight)
                for i, s in enumerate(self.states.values(), 1)
            ]
            return servers_state(*lines)
        if command == "show stat":
            return "# pxname,svname,qcur,qmax,scur,status,weight,\n" + "".join(
                f"{BACKEND},{n},0,0,{i},UP,1,\n" for i, n in enumerate(self.states)
            )
        if words[:2] == ["set", "server"]:
            if self.refuse:
                return self.refuse + "\n"
            name = words[2].split("/")[1]
            if name not in self.states:
                return "No such server.\n"
            s = self.states[name]
            if words[3] == "weight":
                self.states[name] = s.__class__(**{**s.__dict__, "weight": int(words[4])})
            else:
                admin = {"ready": s.admin_state & 0x04, "drain": 0x08, "maint": 0x01}[words[4]]
                self.states[name] = s.__class__(**{**s.__dict__, "admin_state": admin})
            return "\n"
        return "Unknown command.\n"


@pytest.fixture
def hap() -> Iterator[tuple[Haproxy, FakeHaproxySocket]]:
    fake = Haproxy(AS_CONFIGURED)
    server = FakeHaproxySocket(fake)
    yield fake, server
    server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_engine(tmp_path: Path, sock: str, runner: FakeRunner, clock: Clock) -> HaproxyEngine:
    return HaproxyEngine(
        runner,
        config_path=str(tmp_path / "haproxy.cfg"),
        socket_path=sock,
        runtime=HaproxyRuntime(sock, timeout=1.0),
        clock=clock,
    )


class Rig(NamedTuple):
    """An engine over a fake HAProxy socket, with its command runner and clock."""

    fake: Haproxy
    engine: HaproxyEngine
    runner: FakeRunner
    clock: Clock
    server: FakeHaproxySocket
    directory: Path  # where the engine writes haproxy.cfg


@pytest.fixture
def rig(tmp_path: Path, hap: tuple[Haproxy, FakeHaproxySocket]) -> Rig:
    fake, server = hap
    runner, clock = FakeRunner(), Clock()
    engine = make_engine(tmp_path, server.path, runner, clock)
    return Rig(fake, engine, runner, clock, server, tmp_path)


def test_runtime_client(hap: tuple[Haproxy, FakeHaproxySocket]) -> None:
    fake, server = hap
    rt = HaproxyRuntime(server.path)
    assert [s.name for s in rt.servers_state(BACKEND)] == ["node1", "node2", "node3"]
    rt.set_weight(BACKEND, "node1", 7)
    rt.set_state(BACKEND, "node3", "ready")
    assert server.commands[-2:] == [
        f"set server {BACKEND}/node1 weight 7",
        f"set server {BACKEND}/node3 state ready",
    ]
    assert fake.states["node1"].weight == 7 and fake.states["node3"].runtime_state == "ready"
    with pytest.raises(LbError, match="No such server"):
        rt.set_weight(BACKEND, "ghost", 1)
    assert [(s.name, s.sessions) for s in rt.stats(BACKEND)] == [
        ("node1", 0), ("node2", 1), ("node3", 2),
    ]  # fmt: skip
    with pytest.raises(ValueError):
        rt.command("show stat; show info")


def test_runtime_client_no_socket(tmp_path: Path) -> None:
    with pytest.raises(LbError, match="haproxy runtime API"):
        HaproxyRuntime(str(tmp_path / "absent.sock"), timeout=0.2).servers_state()


def test_engine_first_apply_writes_and_reloads(rig: Rig) -> None:
    _, engine, runner, clock, server, tmp_path = rig
    actions = engine.apply(SPEC, [N1, N2, N3])
    assert actions == [f"write {tmp_path / 'haproxy.cfg'}", "reload"]
    assert (tmp_path / "haproxy.cfg").read_text() == render_config(SPEC, [N1, N2, N3], server.path)
    cmds = runner.commands()
    assert (
        cmds[0].startswith("haproxy -c -q -f ") and cmds[1] == "systemctl reload-or-restart haproxy"
    )
    assert not list(tmp_path.glob(".haproxy.*"))  # the temp file was renamed, not left behind


def test_engine_runtime_only_for_differences(rig: Rig) -> None:
    fake, engine, runner, clock, server, tmp_path = rig
    engine.apply(SPEC, [N1, N2, N3])  # write + reload
    runner.calls.clear()
    server.commands.clear()
    # Same servers: no reload; only the drain flag the file cannot express is re-applied.
    assert engine.apply(SPEC, [N1, N2, N3]) == [f"set server {BACKEND}/node2 state drain"]
    assert engine.apply(SPEC, [N1, N2, N3]) == []  # converged: nothing to do
    # Weight and state changes from etcd: runtime commands, file rewritten, no reload.
    wanted = [
        Backend("node1", "10.0.0.11", 8080, weight=40),
        N2,
        N3.__class__(**{**N3.__dict__, "state": "active"}),
    ]
    actions = engine.apply(SPEC, wanted)
    assert actions == [
        f"write {tmp_path / 'haproxy.cfg'}",
        f"set server {BACKEND}/node1 weight 40",
        f"set server {BACKEND}/node3 state ready",
    ]
    assert "systemctl reload-or-restart haproxy" not in runner.commands()
    assert [c for c in server.commands if c.startswith("set ")] == [
        f"set server {BACKEND}/node2 state drain",
        f"set server {BACKEND}/node1 weight 40",
        f"set server {BACKEND}/node3 state ready",
    ]
    # After a reload HAProxy forgets runtime changes; the next apply puts them back.
    fake.states["node2"] = fake.states["node2"].__class__(
        **{**fake.states["node2"].__dict__, "admin_state": 0}
    )
    assert engine.apply(SPEC, wanted) == [f"set server {BACKEND}/node2 state drain"]


def test_engine_reloads_when_servers_change(rig: Rig) -> None:
    _, engine, runner, clock, server, tmp_path = rig
    engine.apply(SPEC, [N1, N2, N3])
    runner.calls.clear()
    n4 = Backend("node4", "10.0.0.14", 8080)
    assert engine.apply(SPEC, [N1, N2, N3, n4])[-1] == "reload"
    # The fake still runs the old set: within the grace period, wait rather than reload again.
    clock.now += 1
    assert engine.apply(SPEC, [N1, N2, N3, n4]) == ["wait for reload"]
    clock.now += 10
    assert engine.apply(SPEC, [N1, N2, N3, n4]) == ["reload"]
    # A structure change (check path) always reloads, even with the same servers.
    other = LbSpec(**{**SPEC.__dict__, "check_path": "/ready"})
    assert engine.apply(other, [N1, N2, N3])[-1] == "reload"


def test_engine_starts_at_once_after_a_stop(rig: Rig) -> None:
    fake, engine, runner, clock, server, tmp_path = rig
    assert engine.apply(SPEC, [N1, N2, N3])[-1] == "reload"
    engine.remove()
    fake.states.clear()  # HAProxy is stopped: its socket lists no server
    clock.now += 1  # well within reload_grace: a restart in place
    runner.calls.clear()
    assert engine.apply(SPEC, [N1, N2, N3]) == ["reload"]
    assert runner.commands() == ["systemctl reload-or-restart haproxy"]


def test_engine_failed_reload_is_retried(rig: Rig) -> None:
    _, engine, runner, clock, server, tmp_path = rig
    engine.apply(SPEC, [N1, N2, N3])
    other = LbSpec(**{**SPEC.__dict__, "inter": 2.0})
    runner.results[("systemctl",)] = CommandResult(1, "", "Job for haproxy.service failed.")
    with pytest.raises(LbError, match="haproxy.service failed"):
        engine.apply(other, [N1, N2, N3])
    runner.results.clear()
    # The file already has the new structure; the engine still knows HAProxy does not.
    assert engine.apply(other, [N1, N2, N3]) == ["reload"]


def test_engine_keeps_old_config_when_check_fails(
    tmp_path: Path, hap: tuple[Haproxy, FakeHaproxySocket]
) -> None:
    _, server = hap
    runner = FakeRunner()
    runner.results[("haproxy", "-c")] = CommandResult(1, "", "[ALERT] parsing error")
    engine = make_engine(tmp_path, server.path, runner, Clock())
    (tmp_path / "haproxy.cfg").write_text("old\n")
    with pytest.raises(LbError, match="parsing error"):
        engine.apply(SPEC, [N1])
    assert (tmp_path / "haproxy.cfg").read_text() == "old\n"
    assert not list(tmp_path.glob(".haproxy.*"))
    assert "systemctl reload-or-restart haproxy" not in runner.commands()


def test_engine_active_connections(tmp_path: Path, hap: tuple[Haproxy, FakeHaproxySocket]) -> None:
    _, server = hap
    engine = make_engine(tmp_path, server.path, FakeRunner(), Clock())
    counters = engine.counters(SPEC, [N2, Backend("ghost", "10.0.0.99", 80)], 1.0)
    assert counters["node2"].connections == 1
    assert counters["ghost"].connections == 0 and counters["ghost"].health is None


def test_engine_server_stats(tmp_path: Path, hap: tuple[Haproxy, FakeHaproxySocket]) -> None:
    _, server = hap
    engine = make_engine(tmp_path, server.path, FakeRunner(), Clock())
    stats = engine.server_stats()
    assert sorted(stats) == ["node1", "node2", "node3"]
    assert (stats["node2"].sessions, stat_health(stats["node2"].status)) == (1, "up")


@pytest.mark.parametrize(
    ("status", "health"),
    [
        ("UP", "up"), ("UP 1/3", "up"), ("DRAIN", "up"), ("NOLB", "up"),
        ("DOWN", "down"), ("DOWN 1/2", "down"),
        ("MAINT", "unknown"), ("MAINT (resolution)", "unknown"), ("no check", "unknown"),
    ],
)  # fmt: skip
def test_stat_health(status: str, health: str) -> None:
    assert stat_health(status) == health


def test_config_passes_haproxy_check(tmp_path: Path) -> None:
    haproxy = require_tool("haproxy", "haproxy", "usr/sbin/haproxy")
    path = tmp_path / "haproxy.cfg"
    spec = LbSpec("127.0.0.1", 18080, 8080, engine="haproxy", algorithm="source")
    text = render_config(spec, [N1, N2, N3], str(tmp_path / "admin.sock"))
    try:
        pwd.getpwnam("haproxy")
        grp.getgrnam("haproxy")
    except KeyError:  # a bare binary without the package's account: check everything else
        text = text.replace("\tuser haproxy\n", "").replace("\tgroup haproxy\n", "")
    path.write_text(text)
    done = subprocess.run(
        [haproxy, "-c", "-f", str(path)], capture_output=True, text=True, timeout=5, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
