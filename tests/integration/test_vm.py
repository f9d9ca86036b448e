"""Virtual machines on real sandbox nodes: the group ``vm`` (VIP + a qemu guest whose disk is
on the storage every node mounts, fenced) of ``up --profile vm``.

The demo guest answers ``GET :8080/cgi-bin/status`` with its boot id and uptime: the same boot
id after a move means the guest moved live; a new one means it booted again. qemu runs under
whatever the vm role's probe chose (TCG on this machine kind, where KVM does not boot a
guest)."""

from __future__ import annotations

import functools
import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterctl.bench.pinger import Pinger
from clusterctl.bench.sandbox import ProcessSampler, node_pids
from clusterctl.bench.vm import GuestClient, ask_guest
from clusterctl.providers.podman_cli import Podman
from clusterctl.state import StateDir

from .conftest import REPO, STATE_ROOT, cli, podman
from .hahelpers import (
    bring_back,
    container,
    container_state,
    group_history,
    group_of,
    node_names,
    partition,
    started_on,
    unpartition,
    vip,
    wait_for,
)
from .rejoinhelpers import online

GENEROUS = 60.0  # seconds: a bound for "it happened", not a performance target
QEMU = "qemu-system-x86"  # the process's name as the kernel keeps it (15 characters)
UNIT = "clusterctl-vm-demo-vm.service"


def guest(address: str, timeout: float = 1.0) -> dict | None:
    return ask_guest(address, timeout)


vm_group = functools.partial(group_of, name="vm")
vm_holder = functools.partial(started_on, name="vm")
history = functools.partial(group_history, name="vm")


def qemu_sampler(sandbox) -> ProcessSampler:
    """On which nodes a qemu process exists, every 50 ms, from the host."""
    record = StateDir(sandbox.cluster, STATE_ROOT).load()
    podman_cli = Podman(STATE_ROOT)
    return ProcessSampler(node_pids(podman_cli, record), QEMU).start()


@pytest.fixture
def vm(vm_sandbox):
    """The vm cluster, healed: every node running and online, the guest answering."""
    _heal(vm_sandbox)
    yield vm_sandbox
    _heal(vm_sandbox)


def _heal(sandbox) -> None:
    names = node_names(sandbox)
    for node, state in bring_back(sandbox, names, check=False).items():
        if state == "running":
            unpartition(sandbox, node)
    wait_for(lambda: online(sandbox) == set(names), 180, 0.5, "every node online")
    if any(vm_group(sandbox).get("failcounts", {}).values()):
        cli("cleanup", "vm", "--cluster", sandbox.cluster)
    wait_for(lambda: vm_holder(sandbox), GENEROUS, 0.5, "the group vm started")
    wait_for(lambda: guest(vip(sandbox)), GENEROUS, 0.5, "the guest answering on the VIP")


def qemu_on(sandbox) -> list[str]:
    """The nodes whose qemu unit is active."""
    found = []
    for node in node_names(sandbox):
        proc = podman("exec", container(sandbox, node), "systemctl", "is-active", "--quiet",
                      UNIT, check=False)  # fmt: skip
        if proc.returncode == 0:
            found.append(node)
    return found


def test_the_guest_runs_on_one_node_and_answers_on_the_vip(vm):
    holder = vm_holder(vm)
    assert qemu_on(vm) == [holder]
    answer = guest(vip(vm))
    assert answer is not None and answer["boots"] >= 1  # it mounted its disk and wrote there
    status = cli("status", "--cluster", vm.cluster, "--json")
    assert status.rc == 0, status.stderr
    groups = {g["name"]: g for g in status.json()["groups"]}
    assert groups["vm"]["node"] == holder and groups["vm"]["state"] == "started"
    assert groups["vm"]["notes"] == {"demo-vm": "running"}  # qemu's word, through its holder
    table = cli("status", "--cluster", vm.cluster).stdout
    assert f"{holder}  started (demo-vm: running)" in table, table
    # the disk is one file on the shared storage, locked by the qemu that runs the guest:
    # another node's qemu cannot open it for writing (the write would go to ext4's unused
    # first 512 bytes, were the lock not there)
    disk = vm.state_dir / "shared" / "vm" / "demo-vm.img"
    assert disk.exists()
    other = next(n for n in node_names(vm) if n != holder)
    proc = podman(
        "exec", container(vm, other), "qemu-io", "-f", "raw", "-c", "write 0 512",
        "/srv/clusterctl/shared/vm/demo-vm.img", check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "lock" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_a_planned_move_is_live(vm):
    holder = vm_holder(vm)
    target = next(n for n in node_names(vm) if n != holder)
    before = guest(vip(vm))
    assert before is not None
    fences = [e for e in history(vm) if e["event"].startswith("fence")]
    with Pinger(vip(vm)) as pinger, GuestClient(vip(vm)) as client:
        time.sleep(1.0)
        moved_at = time.monotonic()
        moved = cli("failover", "vm", "--to", target, "--cluster", vm.cluster, timeout=180)
        assert moved.rc == 0, moved.stderr
        time.sleep(2.0)
    after = guest(vip(vm))
    assert after is not None
    assert after["boot_id"] == before["boot_id"], "the guest booted again: not a live move"
    assert after["uptime"] > before["uptime"]
    assert client.boot_ids() == [before["boot_id"]]
    requests = client.snapshot()
    failures = [(round(r.sent - moved_at, 2), r.errors) for r in client.failed()]
    assert not failures, (
        f"{len(failures)} of {len(requests)} requests failed (sent after the move began, "
        f"errors): {failures}; {moved.stdout.strip()}"
    )
    assert qemu_on(vm) == [target]
    migrated = [e for e in history(vm) if e["event"] == "migrated"]
    assert migrated and target in migrated[-1]["reason"], history(vm)[-10:]
    assert [e for e in history(vm) if e["event"].startswith("fence")] == fences
    print(
        f"\nlive move {holder} -> {target}: {migrated[-1]['reason']}; the longest a request "
        f"on the VIP waited: {client.longest_wait() * 1000:.0f} ms, {len(requests)} sent, "
        f"0 failed; pings every 10 ms unanswered for {pinger.longest_silence() * 1000:.0f} ms "
        f"at most; {moved.stdout.strip()}"
    )


BLOCK_MIGRATION = """table inet it_vm_block {
 chain in { type filter hook input priority -400; tcp dport 7491 reject with tcp reset; }
}
"""


def test_a_failed_migration_leaves_the_guest_running_where_it_was(vm):
    holder = vm_holder(vm)
    target = next(n for n in node_names(vm) if n != holder)
    before = guest(vip(vm))
    assert before is not None
    # the target's incoming qemu waits, but nothing reaches it: qemu's migrate fails
    podman("exec", "-i", container(vm, target), "nft", "-f", "-", stdin=BLOCK_MIGRATION)
    try:
        moved = cli("failover", "vm", "--to", target, "--cluster", vm.cluster, timeout=120)
    finally:
        podman("exec", container(vm, target), "nft", "delete", "table", "inet", "it_vm_block",
               check=False)  # fmt: skip
    assert moved.rc != 0
    # the reason in qemu's words: "... failed (Unable to write to socket: Connection reset ...)"
    assert f"vm stays on {holder}: live migration of demo-vm failed (" in moved.stderr, moved.stderr
    assert vm_holder(vm) == holder
    after = guest(vip(vm))
    assert after is not None and after["boot_id"] == before["boot_id"]  # it ran on throughout
    wait_for(lambda: qemu_on(vm) == [holder], GENEROUS, 0.5, "the target's copy stopped")
    print(f"\nfailed migration: {moved.stderr.strip()}")


def test_an_agent_restarted_on_the_holder_hands_the_guest_over_without_a_fence(vm):
    """`systemctl restart clusterctl-agent` (what `up` does after a configuration change):
    the agent stops its guest within its lease and lets go, so the next holder need not
    fence it (it once outlived its lease in the guest's ACPI power-off and was fenced)."""
    holder = vm_holder(vm)
    before = guest(vip(vm))
    assert before is not None
    fences = [e for e in history(vm) if e["event"].startswith("fence")]
    podman("exec", container(vm, holder), "systemctl", "restart", "clusterctl-agent")
    answer = wait_for(
        lambda: (a := guest(vip(vm))) and a["boot_id"] != before["boot_id"] and a,
        GENEROUS, 0.5, "the guest answering again",
    )  # fmt: skip
    assert answer["boots"] > before["boots"]
    assert container_state(vm, holder) == "running"  # not powered off by a fence
    after = history(vm)
    assert [e for e in after if e["event"].startswith("fence")] == fences
    released = [e for e in after if e["event"] == "released" and e["node"] == holder]
    assert released and released[-1]["reason"] == "the agent is stopping", after[-8:]


def test_a_killed_qemu_is_restarted_in_place_then_moved_at_the_threshold(vm):
    holder = vm_holder(vm)
    boot_ids = [guest(vip(vm))["boot_id"]]

    def kill_and_wait_for_a_new_boot() -> dict:
        podman("exec", container(vm, holder), "systemctl", "kill", "--signal=KILL", UNIT)
        return wait_for(
            lambda: (a := guest(vip(vm))) and a["boot_id"] not in boot_ids and a,
            GENEROUS, 0.5, "the guest booted again",
        )  # fmt: skip

    boot_ids.append(kill_and_wait_for_a_new_boot()["boot_id"])
    assert vm_holder(vm) == holder  # restarted in place, not moved
    assert vm_group(vm)["failcounts"].get(holder) == 1
    events = [e["event"] for e in history(vm)]
    assert "monitor-failed" in events and "restarted" in events
    boot_ids.append(kill_and_wait_for_a_new_boot()["boot_id"])
    assert vm_holder(vm) == holder and vm_group(vm)["failcounts"].get(holder) == 2
    fences = [e for e in history(vm) if e["event"].startswith("fence")]
    kill_and_wait_for_a_new_boot()  # the third failure: migration_threshold (3) reached
    new = vm_holder(vm)
    assert new and new != holder
    assert qemu_on(vm) == [new]
    # it stopped cleanly there (qemu was dead): the new holder needed no fence
    assert [e for e in history(vm) if e["event"].startswith("fence")] == fences


@pytest.mark.parametrize("fault", ["crash", "freeze", "partition"])
def test_a_lost_holder_is_fenced_and_the_guest_boots_elsewhere(vm, fault):
    holder = vm_holder(vm)
    before = guest(vip(vm))
    assert before is not None
    sampler = qemu_sampler(vm)
    try:
        began = time.monotonic()
        if fault == "partition":  # its guest's traffic too: the node routes it
            partition(vm, holder)
        else:
            podman("kill" if fault == "crash" else "pause", container(vm, holder))
        answer = wait_for(
            lambda: (a := guest(vip(vm), timeout=0.5)) and a["boot_id"] != before["boot_id"] and a,
            GENEROUS, 0.1, "the guest answering from another node",
        )  # fmt: skip
        outage = time.monotonic() - began
        time.sleep(1.0)
    finally:
        samples = sampler.stop()
    new = vm_holder(vm)
    assert new and new != holder
    assert answer["boots"] > before["boots"]  # the same disk: it saw the earlier boots
    assert sampler.dual == 0, [s for s in samples if len(s[1]) > 1][:5]
    fenced = [e for e in history(vm) if e["event"] == "fence-done" and holder in e["reason"]]
    assert fenced, history(vm)[-10:]
    print(f"\n{fault} of {holder}: the guest answered from {new} {outage:.2f} s later "
          f"({len(samples)} samples, never two qemu)")  # fmt: skip


INTRUDER = "it-vm-intruder"  # a container of that exact name, removed after
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 7491), 2).close()"
LISTEN = (
    "import socket, time; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 7491)); "
    "s.listen(8); time.sleep(60)"
)


def test_only_the_cluster_s_nodes_reach_the_migration_port(vm, node_image):
    """A move target's incoming qemu takes whatever state is sent to its port (7491): the
    guard drops everyone but the cluster's nodes (and the controller)."""
    holder = vm_holder(vm)
    target, member = [n for n in node_names(vm) if n != holder][:2]
    record = json.loads((vm.state_dir / "cluster.json").read_text())
    address = next(n["address"] for n in record["nodes"] if n["name"] == target)
    stranger = str(ipaddress.ip_network(record["subnet"]).network_address + 250)
    podman("rm", "-f", "-t", "0", INTRUDER, check=False)
    # stands for an incoming qemu: a listener on the migration port of a non-holder
    podman("exec", "-d", container(vm, target), "sh", "-c",
           'echo $$ > /run/it-listener.pid; exec timeout 60 python3 -c "$0"', LISTEN)  # fmt: skip
    try:
        podman(
            "run", "-d", "--rm", "--name", INTRUDER, "--network", record["network"],
            "--ip", stranger, "--entrypoint", "sleep", node_image, "120",
        )  # fmt: skip

        def connects(where: str) -> bool:
            proc = podman("exec", where, "python3", "-c", CONNECT, address, check=False)
            return proc.returncode == 0

        wait_for(lambda: connects(container(vm, member)), 10, 0.5, "a member connecting")
        assert not connects(INTRUDER), f"a stranger at {stranger} reached {target}:7491"
    finally:
        podman("rm", "-f", "-t", "0", INTRUDER, check=False)
        podman("exec", container(vm, target), "sh", "-c", "kill $(cat /run/it-listener.pid)",
               check=False)  # fmt: skip


def test_bad_input_is_refused_in_one_line(vm, tmp_path):
    """Fewer than 3 nodes; a VM whose disk is missing, or that does not fit in a node's
    memory (the agent role's preflight, on the real nodes, before anything changes)."""
    small = cli("up", "--cluster", "it-vm-small", "--profile", "vm", "--nodes", "2")
    assert small.rc != 0 and "3" in small.stderr and "Traceback" not in small.stderr
    assert len([x for x in small.stderr.splitlines() if x.startswith("error:")]) == 1
    shared = "/srv/clusterctl/shared/vm"
    for resource, words in (
        ({"disk": f"{shared}/absent.img"}, f"its disk {shared}/absent.img is missing"),
        ({"disk": f"{shared}/demo-vm.img", "memory": 1 << 20}, "MiB free"),
    ):
        group = {
            "name": "vm2",
            "fencing": "required",
            "resources": [{"name": "other", "type": "vm", "accel": "tcg", **resource}],
        }
        extra = tmp_path / "extra.json"
        extra.write_text(json.dumps({"clusterctl_groups": [group]}))
        playbook = subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible-playbook"),
                "-i", str(vm.state_dir / "inventory.yml"), "playbooks/site.yml",
                "--tags", "agent_preflight", "-e", f"@{extra}",
            ],
            cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert playbook.returncode != 0, playbook.stdout[-2000:]
        lines = [x for x in playbook.stdout.splitlines() if "cannot run the VM other: " in x]
        assert lines and all(words in x for x in lines), playbook.stdout[-3000:]
    assert vm_holder(vm) and guest(vip(vm))  # nothing changed
