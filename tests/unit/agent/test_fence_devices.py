"""Fencing groups and devices (agent/fencing.py): the previous owner is off before the group

The simulated cluster (agentsim.py) checks after every step that the writer never exists on
two nodes, a frozen node's included (it writes the moment it thaws)."""

from __future__ import annotations

import json
import stat
import subprocess

import pytest

from clusterctl.agent.admin import request_move
from clusterctl.agent.config import AgentConfig, ConfigError, GroupSpec, ResourceSpec
from clusterctl.agent.fencing import FenceAgentDevice, FenceError, Fencer, read_secrets
from tests.unit.agent.agentsim import Sim, shared_group


def fenced_sim() -> tuple[Sim, str]:
    sim = Sim(group=shared_group())
    sim.run(1.0)
    (holder,) = [n for n in sim.nodes if "writer.service" in sim.fake[n].units]
    return sim, holder


def writer_on(sim: Sim) -> list[str]:
    return [n for n in sim.nodes if "writer.service" in sim.fake[n].units]


def owner(sim: Sim) -> str | None:
    return sim.backend.dump().get(sim.keys.owner("web"))


def events(sim: Sim, kind: str) -> list[str]:
    return [e.reason for a in sim.agents.values() for e in a.history.pending() if e.event == kind]


def test_the_holder_owns_the_group_before_its_writer_starts() -> None:
    sim, holder = fenced_sim()
    assert owner(sim) == holder
    assert sim.fences == []  # a first start fences nobody


def test_a_frozen_holder_is_fenced_before_the_group_starts_elsewhere() -> None:
    sim, holder = fenced_sim()
    sim.freeze(holder)
    sim.run_until(lambda: len(writer_on(sim)) == 1 and writer_on(sim) != [holder], 5.0)
    (new,) = writer_on(sim)
    assert [node for _, node in sim.fences] == [holder]
    started = sim.fake[new].times("systemctl start writer.service")[-1]
    assert sim.fences[0][0] <= started
    assert owner(sim) == new
    assert holder in sim.dead  # the device powered it off: thawing it runs nothing
    record = json.loads(sim.backend.dump()[sim.keys.fence(holder)])
    assert (record["by"], record["result"]) == (new, "ok")
    assert any(holder in r for r in events(sim, "fence-done"))


def test_a_crashed_holder_is_fenced_too_and_that_is_quick() -> None:
    sim, holder = fenced_sim()
    sim.crash(holder)
    took = sim.run_until(lambda: len(writer_on(sim)) == 1, 5.0)
    assert [node for _, node in sim.fences] == [holder]
    assert took < 1.5  # the lease's expiry; the (simulated) fence adds no wait


def test_a_planned_move_and_a_clean_stop_fence_nobody() -> None:
    sim, holder = fenced_sim()
    target = next(n for n in sim.nodes if n != holder)
    request_move(sim.admin, sim.keys, "web", target, timeout=1.0)
    sim.run_until(lambda: writer_on(sim) == [target], 5.0)
    assert sim.fences == [] and owner(sim) == target
    sim.agents[target].shutdown()
    sim.dead.add(target)  # the agent stopped; its node stays up
    sim.run_until(lambda: len(writer_on(sim)) == 1, 5.0)
    assert sim.fences == []


def test_a_failing_device_leaves_the_group_stopped_and_is_retried() -> None:
    sim, holder = fenced_sim()
    sim.fence_broken.add(holder)
    sim.freeze(holder)
    sim.run(4.0)
    assert writer_on(sim) == [holder]  # only the frozen one: nobody started it again
    new = sim.leader()
    assert new not in (None, holder)
    assert "fencing" in sim.last(new) and "failed" in "".join(sim.sentences(new))
    status = json.loads(sim.backend.dump()[sim.keys.fencing("web")])
    assert status["target"] == holder and "does not answer" in status["error"]
    sim.fence_broken.clear()
    sim.run_until(lambda: writer_on(sim) == [new], 10.0)  # the retry, 5 s later
    assert [node for _, node in sim.fences] == [holder]
    assert sim.keys.fencing("web") not in sim.backend.dump()


def test_an_operator_confirmation_lets_the_group_start_without_the_device() -> None:
    sim, holder = fenced_sim()
    sim.fence_broken.add(holder)
    sim.crash(holder)
    sim.run(2.0)
    assert writer_on(sim) == []
    sim.admin.compare_and_delete(sim.keys.owner("web"), holder)  # what `fence --confirm` does
    sim.run_until(lambda: len(writer_on(sim)) == 1, 2.0)
    assert sim.fences == []


def test_a_holder_that_fenced_itself_clears_its_ownership_once_it_can() -> None:
    sim, holder = fenced_sim()
    sim.partition(holder)
    sim.run(0.7)  # past its deadline: it stopped the writer, but could not say so
    assert writer_on(sim) == [] and owner(sim) == holder
    sim.heal(holder)
    cleared = "web's resources are stopped here: cleared this node's ownership"
    sim.run_until(lambda: cleared in sim.sentences(holder), 2.0)
    sim.run_until(lambda: len(writer_on(sim)) == 1, 2.0)
    assert sim.fences == []  # whoever took it next had nobody to fence


def test_fencing_groups_need_devices_and_prestart_nothing() -> None:
    with pytest.raises(ConfigError, match="fencing needs devices"):
        AgentConfig("node1", ("http://127.0.0.1:2379",), groups=(shared_group(),)).validate()
    writer = ResourceSpec("writer", "systemd", {"unit": "w.service"}, prestart_safe=True)
    group = GroupSpec("db", (writer,), fencing="required")
    devices = {"node1": {"agent": "fence_sim"}}
    with pytest.raises(ConfigError, match="pre-start nothing"):
        AgentConfig("node1", ("http://x:2379",), groups=(group,), fence_devices=devices).validate()
    with pytest.raises(ConfigError, match="fencing modes"):
        AgentConfig(
            "node1", ("http://x:2379",), groups=(GroupSpec("db", (writer,), fencing="maybe"),)
        ).validate()


@pytest.mark.parametrize(
    "device",
    [
        {"agent": "rm -rf"},
        {"agent": "fence_x", "options": {"ip": "1.2.3.4\naction=on"}},
        {"agent": "fence_x", "options": {"password": "secret"}},
        {"agent": "fence_x", "secrets_file": "relative"},
        {"agent": "fence_x", "colour": "red"},
    ],
)
def test_bad_fence_devices_are_refused(device: dict) -> None:
    with pytest.raises(ConfigError):
        AgentConfig("node1", ("http://x:2379",), fence_devices={"node2": device}).validate()


# --- the fence agent device: options on stdin, secrets from a 0600 file ----------------------


def fake_agent(tmp_path, script: str) -> FenceAgentDevice:
    binary = tmp_path / "fence_test"
    binary.write_text("#!/bin/sh\n" + script)
    binary.chmod(0o755)
    secrets = tmp_path / "secrets"
    secrets.write_text("password=hunter2\n")
    secrets.chmod(0o600)
    return FenceAgentDevice(
        "fence_test", {"ip": "10.0.0.1", "plug": "node2"}, str(secrets), agent_dir=tmp_path
    )


def test_the_agent_gets_its_options_and_secrets_on_stdin(tmp_path) -> None:
    seen = tmp_path / "stdin"
    device = fake_agent(tmp_path, f"cat > {seen}\nexit 0\n")
    assert device.off(5) == "fence_test: off"
    assert seen.read_text().splitlines() == [
        "action=off",
        "ip=10.0.0.1",
        "plug=node2",
        "password=hunter2",
    ]


def test_status_and_failures_are_read_from_the_exit_code(tmp_path) -> None:
    assert fake_agent(tmp_path, "exit 2\n").status(5) == "off"
    assert fake_agent(tmp_path, "exit 0\n").status(5) == "on"
    with pytest.raises(FenceError, match="Unable to connect"):
        fake_agent(tmp_path, "echo 'ERROR: Unable to connect' >&2; exit 1\n").off(5)
    with pytest.raises(FenceError, match="did not finish"):
        fake_agent(tmp_path, "sleep 5\n").off(0.2)
    with pytest.raises(FenceError, match="not installed"):
        FenceAgentDevice("fence_absent", agent_dir=tmp_path).off(1)


def test_secrets_must_be_private(tmp_path) -> None:
    path = tmp_path / "secrets"
    path.write_text("password=x\n")
    path.chmod(0o644)
    with pytest.raises(FenceError, match="mode 0600"):
        read_secrets(str(path))
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert read_secrets(str(path)) == ["password=x"]


def test_the_fencer_runs_one_fence_per_node_in_the_background() -> None:
    started: list[str] = []

    class Slow:
        def off(self, timeout: float) -> str:
            started.append("off")
            subprocess.run(["sleep", "0.2"], check=True)
            return "off"

        def status(self, timeout: float) -> str:
            return "on"

    fencer = Fencer({"node2": Slow()}, timeout=5)
    fencer.begin("node2")
    fencer.begin("node2")  # already running: not twice
    assert fencer.running("node2") and fencer.outcome("node2") is None
    while fencer.running("node2"):
        subprocess.run(["sleep", "0.05"], check=True)
    outcome = fencer.outcome("node2")
    assert outcome is not None and outcome.ok and started == ["off"]
    fencer.begin("node9")
    while fencer.running("node9"):
        subprocess.run(["sleep", "0.01"], check=True)
    missing = fencer.outcome("node9")
    assert missing is not None and not missing.ok and "no fence device" in missing.detail


def test_a_reload_gives_the_fencer_a_new_nodes_device(tmp_path) -> None:
    """`clusterctl scale --add` rewrites the existing agents' config with the new node's
    device and reloads them (SIGHUP): the fencer takes it, no restart."""
    from types import SimpleNamespace

    from clusterctl.agent.daemon import reload_fence_devices

    class Off:
        def off(self, timeout: float) -> str:
            return "off"

        def status(self, timeout: float) -> str:
            return "on"

    fencer = Fencer({"node2": Off()}, timeout=5, background=False)
    fencer.begin("node4")
    before = fencer.outcome("node4")
    assert before is not None and not before.ok and "no fence device" in before.detail
    config = tmp_path / "agent.json"
    device = {"agent": "fence_docker", "options": {"plug": "node4"}}
    config.write_text(
        json.dumps(
            {
                "node": "node1",
                "etcd_endpoints": ["http://127.0.0.1:2379"],
                "fence_devices": {"node2": device, "node4": device},
            }
        )  # fmt: skip
    )
    agent = SimpleNamespace(fencer=fencer)
    reload_fence_devices(agent, str(config))  # type: ignore[arg-type]
    assert set(fencer.devices) == {"node2", "node4"}
    config.write_text("{not json")
    reload_fence_devices(agent, str(config))  # type: ignore[arg-type]  # logged, kept
    assert set(fencer.devices) == {"node2", "node4"}


def test_the_preflight_check_names_each_device_that_gives_no_status(capsys) -> None:
    from clusterctl.agent.daemon import check_fencing

    config = AgentConfig(
        "node1",
        ("http://127.0.0.1:2379",),
        fence_devices={"node2": {"agent": "fence_clusterctl_absent"}},
    ).validate()
    assert check_fencing(config) == 1
    assert "node2: /usr/sbin/fence_clusterctl_absent is not installed" in capsys.readouterr().err
    assert check_fencing(AgentConfig("node1", ("http://127.0.0.1:2379",)).validate()) == 0


def test_the_preflight_check_refuses_a_device_that_says_a_running_node_is_off(
    capsys, monkeypatch
) -> None:
    from clusterctl.agent import daemon

    class Says:
        agent = "fence_sim"

        def __init__(self, status: str) -> None:
            self.answer = status

        def status(self, timeout: float) -> str:
            return self.answer

    answers = {"node1": "on", "node2": "off"}
    monkeypatch.setattr(
        daemon, "device_from_config", lambda data: Says(answers[data["options"]["plug"]])
    )
    devices = {n: {"agent": "fence_sim", "options": {"plug": n}} for n in answers}
    config = AgentConfig("node1", ("http://127.0.0.1:2379",), fence_devices=devices).validate()
    assert daemon.check_fencing(config) == 1
    out = capsys.readouterr()
    assert "node1: fence_sim says on" in out.out
    assert "node2: fence_sim says node2 is off, but it is up: the device names another" in out.err
