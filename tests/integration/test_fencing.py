"""Fencing devices on real sandbox nodes: a group on shared storage starts on a new node only
after the old holder is provably off.

The group ``shared`` runs a writer that appends its node's name to a file on the storage every
node mounts (``/srv/clusterctl/shared``), every 10 ms. Whatever the fault, once another node
has written, the old holder must never write again: no interleaving of two writers, ever.
The nodes fence through Debian's fence_docker against the host's fence device
(``up --fencing``)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterctl import fenced
from clusterctl.bench.fence import read_writes, writer_unit
from clusterctl.providers.podman import SHARED_DIR, PodmanProvider
from clusterctl.reporter import ListReporter
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
    wait_for,
)
from .rejoinhelpers import online

GENEROUS = 20.0  # seconds: a bound for "it happened", not a performance target
WRITES = f"{SHARED_DIR}/writes"
WRITER_UNIT = writer_unit(WRITES)
GROUPS = [
    {
        "name": "shared",
        "fencing": "required",
        "migration_threshold": 3,
        "resources": [
            {"name": "writer", "type": "systemd", "unit": "writer.service", "exclusive": True}
        ],
    }
]


def shared_file(sandbox) -> Path:
    return sandbox.state_dir / "shared" / "writes"


def writes(sandbox) -> list[tuple[str, float]]:
    """(node, time) of every line the writers appended (a line cut by a kill is skipped)."""
    return read_writes(shared_file(sandbox))


RETURN_GAP = 1.0  # seconds: a writer back after another's lines came with a takeover


def runs(rows: list[tuple[str, float]]) -> list[tuple[str, float, float]]:
    """(node, first, last) of each stretch of lines one node wrote, in file order."""
    out: list[tuple[str, float, float]] = []
    for node, at in rows:
        if out and out[-1][0] == node:
            out[-1] = (node, out[-1][1], at)
        else:
            out.append((node, at, at))
    return out


def assert_one_writer_at_a_time(sandbox, start: int) -> None:
    """Never two writers: two at once alternate every few milliseconds, so a node whose lines
    come back after another node's within a moment wrote while the other did."""
    found = runs(writes(sandbox)[start:])
    for i, (node, _, last) in enumerate(found):
        for k in range(i + 2, len(found)):
            if found[k][0] == node:
                gap = found[k][1] - last
                assert gap >= RETURN_GAP, f"{node} wrote again {gap:.3f} s later: {found}"
                break


def writers_after(sandbox, start: int) -> list[str]:
    """The distinct writers, in order of their runs, among the lines from ``start`` on."""
    runs: list[str] = []
    for node, _ in writes(sandbox)[start:]:
        if not runs or runs[-1] != node:
            runs.append(node)
    return runs


group = functools.partial(group_of, name="shared")
shared_holder = functools.partial(started_on, name="shared")
history = functools.partial(group_history, name="shared")


@pytest.fixture(scope="module")
def shared(fence_sandbox):
    """The fencing cluster with the writer installed and the group ``shared`` running."""
    for node in node_names(fence_sandbox):
        podman(
            "exec", "-i", container(fence_sandbox, node), "sh", "-c",
            "cat > /etc/systemd/system/writer.service && systemctl daemon-reload",
            stdin=WRITER_UNIT,
        )  # fmt: skip
    groups = fence_sandbox.state_dir.parent / "it-fence-groups.json"
    groups.write_text(json.dumps(GROUPS))
    try:
        up = cli("up", "--cluster", fence_sandbox.cluster, "--groups", str(groups), timeout=900)
    finally:
        groups.unlink()
    assert up.rc == 0, up.stderr[-3000:]
    wait_for(lambda: shared_holder(fence_sandbox), 60, 0.5, "the group shared started")
    return fence_sandbox


@pytest.fixture
def writer(shared):
    """The node that writes now, on a healed cluster; heals it afterwards."""
    _heal(shared)
    yield wait_for(lambda: shared_holder(shared), 60, 0.5, "a holder of shared")
    _heal(shared)


def _heal(sandbox) -> None:
    state = StateDir(sandbox.cluster, STATE_ROOT)
    if fenced.running_pid(state) is None:  # a test stopped it: start it as `up` does
        provider = PodmanProvider(state, ListReporter())
        provider.ensure_fence_device(state.load())
    for node in bring_back(sandbox, node_names(sandbox), check=False):
        unpartition(sandbox, node)
    names = set(node_names(sandbox))
    wait_for(lambda: online(sandbox) == names, 120, 0.5, "every node online")
    cli("cleanup", "shared", "--cluster", sandbox.cluster)
    wait_for(lambda: shared_holder(sandbox), 60, 0.5, "shared running")


def _taken_over(sandbox, old: str, start: int) -> str:
    """Wait until a node other than ``old`` writes; return it."""

    def new_writer() -> str | None:
        runs = writers_after(sandbox, start)
        return next((n for n in runs if n != old), None)

    return wait_for(new_writer, GENEROUS, 0.1, f"a writer other than {old}")


def _never_again(sandbox, old: str, start: int) -> None:
    """After the first line of another writer, ``old`` never writes again, and no two ever
    wrote at once."""
    order = writers_after(sandbox, start)
    first_other = next(i for i, n in enumerate(order) if n != old)
    assert old not in order[first_other:], f"{old} wrote again after the takeover: {order}"
    assert_one_writer_at_a_time(sandbox, start)


def _fenced_before_start(sandbox, old: str, new: str) -> dict:
    entries = history(sandbox)
    done = [e for e in entries if e["event"] == "fence-done" and old in e["reason"]]
    acquired = [e for e in entries if e["event"] == "acquired" and e["node"] == new]
    assert done and acquired, entries[-10:]
    assert done[-1]["at"] <= acquired[-1]["at"]
    return done[-1]


def test_a_frozen_holder_is_fenced_and_never_writes_again(shared, writer):
    start = len(writes(shared))
    frozen_at = time.time()
    podman("pause", container(shared, writer))
    new = _taken_over(shared, writer, start)
    took = next(t for n, t in writes(shared)[start:] if n == new) - frozen_at
    done = _fenced_before_start(shared, writer, new)
    assert container_state(shared, writer) not in ("running", "paused")  # powered off
    podman("unpause", container(shared, writer), check=False)  # too late: it is off
    podman("start", container(shared, writer))
    wait_for(lambda: writer in online(shared), 120, 0.5, f"{writer} back")
    time.sleep(2)
    _never_again(shared, writer, start)
    print(f"\nfrozen {writer}: {new} wrote {took:.2f} s after the freeze; {done['reason']}")


def test_a_crashed_holder_is_fenced_and_the_group_serves_elsewhere(shared, writer):
    start = len(writes(shared))
    last = writes(shared)[-1][1]
    podman("kill", container(shared, writer))
    new = _taken_over(shared, writer, start)
    gap = next(t for n, t in writes(shared)[start:] if n == new) - last
    _fenced_before_start(shared, writer, new)
    _never_again(shared, writer, start)
    print(f"\ncrash of {writer}: {new} wrote {gap:.2f} s after its last line")


def test_an_agent_killed_with_its_service_running_never_makes_two_writers(shared, writer):
    """Its unit stops the service after the agent died, and its restarted agent clears its
    ownership, or the next holder fences it: either way one writer at a time (the restarted
    agent itself may take the group back)."""
    start = len(writes(shared))
    killed_at = time.time()
    podman("exec", container(shared, writer), "systemctl", "kill", "-s", "KILL",
           "clusterctl-agent")  # fmt: skip

    def resumed() -> bool:
        rows = writes(shared)[start:]
        return bool(rows) and rows[-1][1] > killed_at + 1.0

    wait_for(resumed, GENEROUS, 0.2, "writes again after the agent kill")
    time.sleep(2)
    assert_one_writer_at_a_time(shared, start)


def test_a_partitioned_holder_is_fenced_and_never_writes_again(shared, writer):
    start = len(writes(shared))
    partition(shared, writer)
    new = _taken_over(shared, writer, start)
    _fenced_before_start(shared, writer, new)
    time.sleep(2)
    _never_again(shared, writer, start)


def test_an_unreachable_device_keeps_the_group_stopped_until_an_operator_confirms(shared, writer):
    state = StateDir(shared.cluster, STATE_ROOT)
    assert fenced.stop(state)  # the device no longer answers
    start = len(writes(shared))
    podman("kill", container(shared, writer))
    wait_for(lambda: group(shared).get("state") == "fence-failed", GENEROUS, 0.5, "fence-failed")
    time.sleep(3)
    # nobody writes (safety over availability), but the dead node's lines before its kill
    assert [n for n in writers_after(shared, start) if n != writer] == []
    text = cli("status", "--cluster", shared.cluster).stdout
    assert f"waits for {writer} to be fenced" in text and "--confirm" in text
    assert cli("fence", "node9", "--confirm", "--cluster", shared.cluster).rc == 1
    online_node = next(n for n in node_names(shared) if n != writer)
    refused = cli("fence", online_node, "--confirm", "--cluster", shared.cluster)
    assert refused.rc != 0 and "online" in refused.stderr
    # the playbook (cluster_fence) in check mode first: it says what it would release
    playbook = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"), "--check",
            "-i", str(shared.state_dir / "inventory.yml"), "playbooks/fence.yml",
            "-e", f"node={writer}",
            "-e", f"clusterctl_api_token_file={shared.state_dir / 'api-token'}",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert playbook.returncode == 0, playbook.stdout[-3000:] + playbook.stderr[-2000:]
    assert f"{writer} would release: shared" in playbook.stdout
    assert group(shared).get("state") == "fence-failed"  # check mode released nothing
    confirmed = cli("fence", writer, "--confirm", "--cluster", shared.cluster)
    assert confirmed.rc == 0, confirmed.stderr
    assert "only confirm a node you have seen off" in confirmed.stderr
    new = _taken_over(shared, writer, start)
    assert any(e["event"] == "fence-confirmed" for e in history(shared)) or new


def test_a_group_file_with_broken_rules_is_refused_before_anything_changes(shared, tmp_path):
    bad = tmp_path / "groups.yml"
    for text, words in (
        ("- name: x\n  resources: []\n", "no resources"),
        ("- name: web\n  resources: [{name: a, type: systemd, unit: a.service}]\n", "taken"),
        ("- name: y\n  fencing: maybe\n  resources: [{name: a, type: systemd, unit: a}]\n",
         "fencing modes"),
        ("{not: [a list", "not YAML"),
    ):  # fmt: skip
        bad.write_text(text)
        result = cli("up", "--cluster", shared.cluster, "--groups", str(bad), timeout=120)
        assert result.rc == 1 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    record = json.loads((shared.state_dir / "cluster.json").read_text())
    assert [g["name"] for g in record["groups"]] == ["shared"]


def test_a_planned_move_needs_no_fence(shared, writer):
    start = len(writes(shared))
    fences_before = len([e for e in history(shared) if e["event"].startswith("fence")])

    def started_at(node: str) -> str:
        return podman(
            "inspect", "--format", "{{.State.StartedAt}}", container(shared, node)
        ).stdout.strip()

    # not the node the previous test powered off and started again: it may still be rejoining
    target = min((n for n in node_names(shared) if n != writer), key=started_at)
    moved = cli("failover", "shared", "--to", target, "--cluster", shared.cluster, timeout=60)
    assert moved.rc == 0, moved.stderr
    _taken_over(shared, writer, start)
    time.sleep(1)
    _never_again(shared, writer, start)
    assert len([e for e in history(shared) if e["event"].startswith("fence")]) == fences_before
    assert group(shared)["owner"] == target


PYZ = "/usr/local/lib/clusterctl/clusterctl-agent.pyz"


def test_the_preflight_names_a_device_that_cannot_tell_or_is_not_there(shared):
    """`up`'s fence check (roles/agent, before the configuration is written), run on a real
    node against broken variants of its own configuration: one line per broken device."""
    node = node_names(shared)[0]
    other = node_names(shared)[1]
    installed = shared.exec(node, "cat", "/etc/clusterctl/agent.json")
    config = json.loads(installed)

    def check(change: dict) -> subprocess.CompletedProcess:
        bad = json.loads(installed)
        bad["fence_devices"][other] = {**bad["fence_devices"][other], **change}
        return podman(
            "exec", "-i", container(shared, node), "python3", PYZ, "--config", "/dev/stdin",
            "--check-fencing", stdin=json.dumps(bad), check=False,
        )  # fmt: skip

    options = config["fence_devices"][other]["options"]
    for change, words in (
        ({"agent": "fence_clusterctl_absent"}, "fence_clusterctl_absent is not installed"),
        ({"options": {**options, "plug": "it-fence-no-such-node"}}, "fence_docker status failed"),
        ({"secrets_file": "/etc/clusterctl/fence/absent.secrets"}, "cannot read"),
    ):
        proc = check(change)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"{other}: ") and words in lines[0], lines
        assert "Traceback" not in proc.stderr
    good = check({})
    assert good.returncode == 0, good.stderr
    assert f"{other}: fence_docker says on" in good.stdout
    assert shared.exec(node, "cat", "/etc/clusterctl/agent.json") == installed
