"""`clusterctl up`, re-run, status and the ssh provider, on real sandbox nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from clusterctl.paths import PROJECT_ROOT
from clusterctl.providers.network import node_mac
from clusterctl.reporter import ListReporter
from clusterctl.runner import PlaybookFailed, run_playbook

from .conftest import STATE_ROOT, cli, podman

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(address: str, path: str = "/") -> tuple[int, str, dict]:
    with OPENER.open(f"http://{address}{path}", timeout=5) as resp:
        return resp.status, resp.read().decode(), dict(resp.headers)


def test_every_node_serves_a_page_naming_itself(sandbox):
    assert [n["name"] for n in sandbox.nodes] == ["node1", "node2", "node3"]
    for node in sandbox.nodes:
        status, body, headers = get(node["address"])
        assert status == 200
        assert body.splitlines()[0] == node["name"]
        assert headers["X-Clusterctl-Node"] == node["name"]
        assert get(node["address"], "/healthz")[1] == "ok\n"


def test_first_up_converged_and_reported_a_recap(sandbox):
    assert sandbox.info["changed"] > 0
    for node in ("node1", "node2", "node3"):
        assert f"{node}        ok=" in sandbox.up.stderr
    assert "play: Converge cluster nodes" in sandbox.up.stderr


def test_containers_are_systemd_nodes_with_pinned_macs(sandbox):
    for node in sandbox.nodes:
        name = f"{sandbox.cluster}-{node['name']}"
        assert sandbox.exec(node["name"], "systemctl", "is-system-running").strip() in (
            "running",
            "degraded",
        )
        mac = podman(
            "inspect", name, "--format", "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}"
        ).stdout.strip()
        assert mac == node_mac(sandbox.cluster, node["name"])
    keys = {
        sandbox.exec(n["name"], "cat", "/etc/ssh/ssh_host_ed25519_key.pub") for n in sandbox.nodes
    }
    assert len(keys) == 3, "every node has its own host key"


def test_state_directory_holds_private_secrets(sandbox):
    for name in ("id_ed25519", "known_hosts", "cluster.json", "inventory.yml"):
        path = sandbox.state_dir / name
        assert path.exists(), name
    assert (sandbox.state_dir / "id_ed25519").stat().st_mode & 0o077 == 0
    assert (STATE_ROOT / "containers.conf").read_text().count('runtime = "runc"') == 1


def service_pids(sandbox) -> dict[str, str]:
    return {
        n["name"]: sandbox.exec(n["name"], "systemctl", "show", "-p", "MainPID", "nginx", "ssh")
        for n in sandbox.nodes
    }


def test_rerun_changes_nothing_and_restarts_nothing(sandbox):
    before = service_pids(sandbox)
    again = cli("up", "--cluster", sandbox.cluster, "--full", "--json", check=True)
    assert "play: Converge cluster nodes" in again.stderr  # --full: the whole converge
    assert again.json()["changed"] == 0
    for node in ("node1", "node2", "node3"):
        line = next(x for x in again.stderr.splitlines() if x.strip().startswith(node))
        assert "changed=0" in line and "failed=0" in line
    assert service_pids(sandbox) == before


def test_a_rerun_compares_the_nodes_and_repairs_one_changed_by_hand(sandbox):
    matches = "every node matches its last converge: nothing to change"
    quick = cli("up", "--cluster", sandbox.cluster, "--json", check=True)
    assert matches in quick.stderr and "play: Converge cluster nodes" not in quick.stderr
    assert quick.json()["changed"] == 0
    site = "/etc/nginx/sites-available/clusterctl"
    good = sandbox.exec("node2", "cat", site)
    # by hand on node2: a managed file edited, the web server stopped and kept from booting
    sandbox.exec("node2", "sh", "-c", f"echo '# by hand' >> {site} && systemctl stop nginx "
                 "&& systemctl disable nginx")  # fmt: skip
    repair = cli("up", "--cluster", sandbox.cluster, "--json", check=True)
    said = "changed since the last converge: node2 (/etc/nginx/sites-available/clusterctl, "
    assert said + "boot links, unit nginx); converging" in repair.stderr
    assert "play: Converge cluster nodes" in repair.stderr
    assert repair.json()["changed"] > 0
    assert sandbox.exec("node2", "cat", site) == good
    assert sandbox.exec("node2", "systemctl", "is-active", "nginx").strip() == "active"
    assert sandbox.exec("node2", "systemctl", "is-enabled", "nginx").strip() == "enabled"
    assert get(next(n["address"] for n in sandbox.nodes if n["name"] == "node2"))[0] == 200
    # a managed file removed on another node: noticed there, written again
    sandbox.exec("node1", "rm", "/etc/clusterctl/node.json")
    again = cli("up", "--cluster", sandbox.cluster, "--json", check=True)
    [said] = [x for x in again.stderr.splitlines() if "changed since the last converge" in x]
    assert "node1 (" in said and "/etc/clusterctl/node.json" in said and "node2" not in said
    assert sandbox.exec("node1", "test", "-s", "/etc/clusterctl/node.json") == ""
    settled = cli("up", "--cluster", sandbox.cluster, "--json", check=True)
    assert matches in settled.stderr and settled.json()["changed"] == 0


def test_status_table_and_json(sandbox):
    table = cli("status", "--cluster", sandbox.cluster, check=True).stdout
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    for node in sandbox.nodes:
        # NODE ADDRESS ONLINE SSH WEB ETCD NOTE
        assert rows[node["name"]][1:5] == [node["address"], "yes", "ok", "ok"]
    data = cli("status", "--cluster", sandbox.cluster, "--json", check=True).json()
    assert data["cluster"] == sandbox.cluster
    assert isinstance(data["quorum"], bool)
    assert data["groups"] == [] and data["backends"] == []
    assert [(n["name"], n["online"], n["web"]) for n in data["nodes"]] == [
        ("node1", True, True),
        ("node2", True, True),
        ("node3", True, True),
    ]


def test_status_sees_a_stopped_web_server(sandbox):
    sandbox.exec("node2", "systemctl", "stop", "nginx")
    try:
        data = cli("status", "--cluster", sandbox.cluster, "--json", check=True).json()
        web = {n["name"]: n["web"] for n in data["nodes"]}
        assert web == {"node1": True, "node2": False, "node3": True}
    finally:
        sandbox.exec("node2", "systemctl", "start", "nginx")


def test_plain_ansible_playbook_works_on_the_generated_inventory(sandbox):
    # run from the repo root, where ansible.cfg is found as Ansible always finds it
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    playbook = str(Path(sys.executable).parent / "ansible-playbook")
    proc = subprocess.run(
        [playbook, "-i", str(sandbox.state_dir / "inventory.yml"), "playbooks/site.yml"],
        capture_output=True, text=True, timeout=300, env=env, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:]
    recap = proc.stdout[proc.stdout.index("PLAY RECAP") :]
    assert recap.count("changed=0") == 3


def test_ssh_provider_runs_the_same_playbooks_on_existing_hosts(sandbox, tmp_path):
    key = sandbox.state_dir / "id_ed25519"
    lines = ["[cluster]"] + [
        f"{n['name']} ansible_host={n['address']} ansible_user=root "
        f"ansible_ssh_private_key_file={key}"
        for n in sandbox.nodes
    ]
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("\n".join(lines) + "\n")
    cluster = "it-hosts"
    cli("down", "--cluster", cluster)
    # the sandbox runs profile web; the ha and lb profiles also need clusterctl_vip
    args = ["--provider", "ssh", "-i", str(inventory), "--cluster", cluster, "--profile", "web"]
    args.append("--json")
    try:
        first = cli("up", *args)
        assert first.rc == 0, first.stderr[-2000:]
        # the hosts now belong to cluster it-hosts: their pages say so
        for node in sandbox.nodes:
            assert f"cluster {cluster}," in get(node["address"])[1]
        again = cli("up", *args)
        assert again.rc == 0, again.stderr[-2000:]
        assert again.json()["changed"] == 0
        data = cli("status", "--cluster", cluster, "--json", check=True).json()
        assert all(n["online"] and n["web"] for n in data["nodes"])
    finally:
        down = cli("down", "--cluster", cluster)
    assert down.rc == 0
    assert not (STATE_ROOT / cluster).exists()
    # forgetting an ssh cluster leaves the hosts alone
    assert get(sandbox.nodes[0]["address"])[0] == 200
    cli("up", "--cluster", sandbox.cluster, check=True)  # give the nodes back to the sandbox


def test_a_changed_host_key_is_refused_by_up_and_by_ansible(sandbox, tmp_path, monkeypatch):
    known = sandbox.state_dir / "known_hosts"
    saved = known.read_text()
    # another host key where node1's is recorded: what an impostor at its address would show
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")],
        check=True,
    )
    key_type, key = (tmp_path / "impostor.pub").read_text().split()[:2]
    address = sandbox.nodes[0]["address"]
    lines = [
        f"{address} {key_type} {key}" if line.startswith(f"{address} ") else line
        for line in saved.splitlines()
    ]
    assert lines != saved.splitlines()
    known.write_text("\n".join(lines) + "\n")
    try:
        up = cli("up", "--cluster", sandbox.cluster)
        assert up.rc == 1, up.stderr[-2000:]
        assert "SSH host key of node1" in up.stderr and "Traceback" not in up.stderr
        # Ansible itself, run the way clusterctl runs it (ansible-runner), refuses too; a
        # fresh control-socket directory, so no verified connection of earlier runs is reused
        monkeypatch.setenv("ANSIBLE_SSH_CONTROL_PATH_DIR", str(tmp_path / "cp"))
        with pytest.raises(PlaybookFailed) as failed:
            run_playbook(
                "site.yml", inventory=sandbox.state_dir / "inventory.yml",
                work_dir=tmp_path / "runner", reporter=ListReporter(), host_count=3,
            )  # fmt: skip
        unreachable = [f for f in failed.value.result.failures if f.unreachable]
        assert [f.host for f in unreachable] == ["node1"], failed.value.result.failures
        assert "Host key verification failed" in unreachable[0].message
    finally:
        known.write_text(saved)


SUDO_USER = "ops"


def _log_in_as_sudo_user_only(sandbox) -> None:
    """Give every node a user with passwordless sudo and the controller's key, and make
    sshd refuse root: the way many sites run their hosts."""
    script = f"""set -e
id {SUDO_USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {SUDO_USER}
install -d -m 0700 -o {SUDO_USER} -g {SUDO_USER} /home/{SUDO_USER}/.ssh
install -m 0600 -o {SUDO_USER} -g {SUDO_USER} /root/.ssh/authorized_keys /home/{SUDO_USER}/.ssh/
echo '{SUDO_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{SUDO_USER}
chmod 0440 /etc/sudoers.d/{SUDO_USER}
echo 'PermitRootLogin no' > /etc/ssh/sshd_config.d/00-no-root.conf
systemctl reload ssh
"""
    for node in sandbox.nodes:
        sandbox.exec(node["name"], "sh", "-c", script)


def _ssh_true(sandbox, user: str, address: str) -> int:
    return subprocess.run(
        [
            "ssh", "-i", str(sandbox.state_dir / "id_ed25519"), "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={sandbox.state_dir / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=no", f"{user}@{address}",
            "true",
        ],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    ).returncode  # fmt: skip


def test_ssh_provider_builds_an_lb_cluster_as_a_non_root_user_with_become(pool, sandbox, tmp_path):
    """Hosts that refuse root logins: clusterctl logs in as a sudo user and becomes root.
    The nodes are left as another cluster's, so the sandbox is thrown away afterwards."""
    import ipaddress

    from clusterctl.providers.network import vip_address

    _log_in_as_sudo_user_only(sandbox)
    address = sandbox.nodes[0]["address"]
    assert _ssh_true(sandbox, "root", address) != 0  # root is refused now
    assert _ssh_true(sandbox, SUDO_USER, address) == 0
    vip = vip_address(ipaddress.ip_network(f"{address}/24", strict=False))
    key = sandbox.state_dir / "id_ed25519"
    hosts = {
        n["name"]: {"ansible_host": n["address"], "ansible_user": SUDO_USER} for n in sandbox.nodes
    }
    inventory = tmp_path / "hosts.yml"
    cluster = "it-sudo"
    group_vars = {
        "ansible_become": True,
        "ansible_ssh_private_key_file": str(key),
        "clusterctl_vip": vip,
        "clusterctl_vip_prefix": 24,
        "clusterctl_vip_interface": "eth0",
    }
    inventory.write_text(
        json.dumps({"all": {"children": {"cluster": {"hosts": hosts, "vars": group_vars}}}})
    )
    cli("down", "--cluster", cluster)
    args = ["--provider", "ssh", "-i", str(inventory), "--cluster", cluster, "--profile", "lb"]
    try:
        first = cli("up", *args, "--json", timeout=900)
        assert first.rc == 0, first.stderr[-3000:]
        # the controller reaches the agents through the nodes' guards (it computed its own
        # address: under sudo the SSH session's source is not in the environment)
        data = cli("status", "--cluster", cluster, "--json", check=True).json()
        assert all(n["online"] for n in data["nodes"]), data
        # the VIP balances over all three nodes' web servers
        served = {get(vip)[2]["X-Clusterctl-Node"] for _ in range(12)}
        assert served == {"node1", "node2", "node3"}
        # and a planned move goes through the agents' API over TLS
        holder = next(g["node"] for g in data["groups"] if g["name"] == "web")
        target = next(n["name"] for n in sandbox.nodes if n["name"] != holder)
        moved = cli("failover", "web", "--to", target, "--cluster", cluster, "--json")
        assert moved.rc == 0, moved.stderr[-2000:]
        assert get(vip)[0] == 200
    finally:
        down = cli("down", "--cluster", cluster)
        pool.release()  # the nodes now belong to it-sudo; the next test gets a fresh sandbox
    assert down.rc == 0
