"""Scaling the lb sandbox out and in under a bounded load (clients looping GET http://VIP/,
1 s timeout): `clusterctl scale --add 1` then `--remove node4`, with no failed request."""

from __future__ import annotations

import time

from .conftest import cli, podman
from .hahelpers import container, container_state, holder, node_exec, vip, wait_for
from .lbhelpers import LoadClient, backend_rows, lb_ready, refresh_nodes
from .test_lb import BASE, lb  # noqa: F401  (the healing fixture)


def _node_fingerprint(sandbox, node: str) -> tuple[str, ...]:
    """What changes if a node is re-created or its services restart."""
    started = podman("inspect", "--format", "{{.State.StartedAt}}", container(sandbox, node))
    units = [
        node_exec(sandbox, node, "systemctl", "show", "-p", "ActiveEnterTimestamp", u)[1]
        for u in ("nginx", "clusterctl-agent", "etcd")
    ]
    config = node_exec(sandbox, node, "md5sum", "/etc/clusterctl/agent.json")[1]
    return (started.stdout, *units, config)


def test_scale_out_and_in_under_load(lb_sandbox, lb):  # noqa: F811
    before = {n: _node_fingerprint(lb_sandbox, n) for n in BASE}
    with LoadClient(vip(lb_sandbox), limit=600) as load:
        time.sleep(0.5)
        t_add = time.monotonic()
        result = cli("scale", "--add", "1", "--cluster", lb_sandbox.cluster, timeout=400)
        assert result.rc == 0, result.stderr[-3000:]
        assert result.stdout.strip() == "added node4"
        added = time.monotonic()
        assert refresh_nodes(lb_sandbox) == [*BASE, "node4"]
        first = load.wait_answer("node4", t_add, 30)
        wait_for(lambda: lb_ready(lb_sandbox), 30, 0.5, "4 healthy backends")
        time.sleep(2.0)
        t_remove = time.monotonic()
        result = cli("scale", "--remove", "node4", "--cluster", lb_sandbox.cluster, timeout=400)
        assert result.rc == 0, result.stderr[-3000:]
        removed = time.monotonic()
        time.sleep(1.0)
        end = time.monotonic()
    print(
        f"\nscale --add 1: {added - t_add:.1f} s, node4 answered "
        f"{first.sent - t_add:.1f} s after the start, {len(load.failed(t_add, t_remove))} failed; "
        f"{load.summary(t_add, t_remove)}\nscale --remove node4: {removed - t_remove:.1f} s, "
        f"{len(load.failed(t_remove))} failed; {load.summary(t_remove, end)}"
    )
    assert not load.failed(t_add, t_remove), load.summary(t_add, t_remove)
    assert load.counts(first.sent, t_remove)["node4"] > 0
    assert not load.failed(t_remove), load.summary(t_remove, end)
    assert load.last_answer("node4") < removed
    assert "node4" not in load.counts(removed, end)
    # node4 is gone everywhere; the others are exactly as they were.
    assert container_state(lb_sandbox, "node4") == "missing"
    assert refresh_nodes(lb_sandbox) == BASE
    assert sorted(backend_rows(lb_sandbox)) == BASE
    assert {n: _node_fingerprint(lb_sandbox, n) for n in BASE} == before
    assert holder(lb_sandbox) == lb
    assert lb_ready(lb_sandbox) == lb


def test_scale_refuses_a_node_whose_host_key_changed_before_making_anything(
    lb_sandbox,
    lb,  # noqa: F811
    tmp_path,
):
    """An impostor at an existing node's address: `scale --add` stops before it creates a
    node or copies anything (every existing node's guard and certificates would change)."""
    import subprocess

    known = lb_sandbox.state_dir / "known_hosts"
    saved = known.read_text()
    record_before = (lb_sandbox.state_dir / "cluster.json").read_text()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")],
        check=True,
    )
    key_type, key = (tmp_path / "impostor.pub").read_text().split()[:2]
    address = lb_sandbox.nodes[1]["address"]
    known.write_text(
        "\n".join(
            f"{address} {key_type} {key}" if line.startswith(f"{address} ") else line
            for line in saved.splitlines()
        )
        + "\n"
    )
    try:
        result = cli("scale", "--add", "1", "--cluster", lb_sandbox.cluster, timeout=120)
        assert result.rc == 1, result.stderr[-2000:]
        assert "SSH host key of node2" in result.stderr and "Traceback" not in result.stderr
        assert container_state(lb_sandbox, "node4") == "missing"
        assert (lb_sandbox.state_dir / "cluster.json").read_text() == record_before
    finally:
        known.write_text(saved)
