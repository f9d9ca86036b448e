from pathlib import Path

import pytest
import yaml

from clusterctl.errors import ClusterctlError
from clusterctl.inventory import InventoryNode, load_inventory, render_inventory


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


THREE_INI = (
    "[cluster]\na ansible_host=192.0.2.1\nb ansible_host=192.0.2.2\nc ansible_host=192.0.2.3\n"
)

YAML_OK = """\
all:
  children:
    cluster:
      hosts:
        web1: {ansible_host: 192.0.2.11}
        web2: {ansible_host: 192.0.2.12, ansible_port: 2222}
        web3: {ansible_host: 192.0.2.13, ansible_user: admin, ansible_become: true}
"""


def test_yaml_inventory_is_read(tmp_path):
    nodes = load_inventory(write(tmp_path, "hosts.yml", YAML_OK))
    assert [n.name for n in nodes] == ["web1", "web2", "web3"]
    assert nodes[1].port == 2222
    assert nodes[2].user == "admin"


def test_ini_inventory_is_read(tmp_path):
    text = (
        "[cluster]\na ansible_host=192.0.2.1\nb ansible_host=192.0.2.2\nc ansible_host=192.0.2.3\n"
    )
    nodes = load_inventory(write(tmp_path, "hosts.ini", text))
    assert [(n.name, n.address) for n in nodes] == [
        ("a", "192.0.2.1"),
        ("b", "192.0.2.2"),
        ("c", "192.0.2.3"),
    ]


def test_two_nodes_are_refused_with_the_count(tmp_path):
    text = "[cluster]\na ansible_host=192.0.2.1\nb ansible_host=192.0.2.2\n"
    with pytest.raises(ClusterctlError) as err:
        load_inventory(write(tmp_path, "hosts.ini", text))
    assert "has 2 nodes" in err.value.message
    assert "at least 3" in err.value.message
    assert "majority" in err.value.hint


def test_duplicate_yaml_name_is_refused(tmp_path):
    text = YAML_OK + "        web1: {ansible_host: 192.0.2.14}\n"
    with pytest.raises(ClusterctlError, match="web1 appears more than once"):
        load_inventory(write(tmp_path, "hosts.yml", text))


def test_duplicate_ini_name_is_refused(tmp_path):
    text = (
        "[cluster]\na ansible_host=192.0.2.1\nb ansible_host=192.0.2.2\n"
        "c ansible_host=192.0.2.3\na ansible_host=192.0.2.4\n"
    )
    with pytest.raises(ClusterctlError, match="a appears more than once"):
        load_inventory(write(tmp_path, "hosts.ini", text))


def test_same_host_in_two_groups_is_fine(tmp_path):
    text = (
        "[cluster]\na ansible_host=192.0.2.1\nb ansible_host=192.0.2.2\nc ansible_host=192.0.2.3\n"
        "[web]\na\n"
    )
    assert len(load_inventory(write(tmp_path, "hosts.ini", text))) == 3


def test_duplicate_address_is_refused(tmp_path):
    text = (
        "[cluster]\na ansible_host=192.0.2.1\nb ansible_host=192.0.2.1\nc ansible_host=192.0.2.3\n"
    )
    with pytest.raises(ClusterctlError, match="same address 192.0.2.1"):
        load_inventory(write(tmp_path, "hosts.ini", text))


def test_missing_inventory(tmp_path):
    with pytest.raises(ClusterctlError, match="not found"):
        load_inventory(tmp_path / "nope.yml")


def test_rendered_inventory_round_trips(tmp_path):
    nodes = [InventoryNode(f"node{i}", f"10.0.0.{i}") for i in range(1, 4)]
    text = render_inventory("demo", nodes, tmp_path / "key", tmp_path / "known_hosts")
    data = yaml.safe_load(text)
    assert data["all"]["children"]["cluster"]["hosts"]["node2"] == {"ansible_host": "10.0.0.2"}
    assert data["all"]["vars"]["clusterctl_cluster"] == "demo"
    assert "StrictHostKeyChecking=yes" in data["all"]["vars"]["ansible_ssh_common_args"]
    path = write(tmp_path, "inv.yml", text)
    assert [n.address for n in load_inventory(path)] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_group_vars_reach_the_nodes(tmp_path):
    text = THREE_INI + (
        "[cluster:vars]\nansible_ssh_private_key_file=/keys/k\nansible_user=ops\nansible_become=yes\n"
    )
    nodes = load_inventory(write(tmp_path, "hosts.ini", text))
    assert {(n.key_file, n.user) for n in nodes} == {("/keys/k", "ops")}


def test_sample_inventories_are_valid():
    from clusterctl.paths import PROJECT_ROOT

    for name in ("hosts.yml", "hosts.ini"):
        nodes = load_inventory(PROJECT_ROOT / "inventories/sample" / name)
        assert [n.name for n in nodes] == ["web1", "web2", "web3"]
        assert all(n.key_file == "~/.ssh/id_ed25519" for n in nodes)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[cluster]\nbad;name ansible_host=192.0.2.4\n", "not a valid node name"),
        ("[cluster]\nd ansible_host=192.0.2.4 ansible_port=abc\n", "ansible_port 'abc'"),
        ("[cluster]\nd ansible_host=192.0.2.4 ansible_port=99999\n", "ansible_port 99999"),
        ("[cluster]\nd ansible_host=web.example\n", "needs an IP address"),
        ("[cluster]\nd ansible_host=192.0.2.4 ansible_user=root;reboot\n", "not a user name"),
        ("[cluster]\nd ansible_host=192.0.2.4 ansible_user=ops\n", "ansible_become is not set"),
        (
            "[cluster]\nd ansible_host=192.0.2.4 ansible_user=ops ansible_become=maybe\n",
            "ansible_become",
        ),
    ],
)
def test_every_inventory_value_is_checked_in_one_line(tmp_path, line, expected):
    text = THREE_INI + line.replace("[cluster]\n", "")
    with pytest.raises(ClusterctlError) as err:
        load_inventory(write(tmp_path, "hosts.ini", text))
    assert expected in err.value.message and "\n" not in err.value.message


def test_a_host_name_with_a_node_address_is_fine(tmp_path):
    text = THREE_INI + "d ansible_host=web.example clusterctl_node_address=192.0.2.4\n"
    node = load_inventory(write(tmp_path, "hosts.ini", text))[-1]
    assert (node.address, node.cluster_address) == ("web.example", "192.0.2.4")


def test_a_variable_set_twice_is_reported_as_such(tmp_path):
    text = YAML_OK.replace(
        "web1: {ansible_host: 192.0.2.11}",
        "web1:\n          ansible_host: 192.0.2.11\n          ansible_host: 192.0.2.19",
    )
    with pytest.raises(ClusterctlError, match="variable ansible_host is set twice"):
        load_inventory(write(tmp_path, "hosts.yml", text))


def _fence_inventory(tmp_path: Path, fence: dict) -> Path:
    hosts = {f"n{i}": {"ansible_host": f"192.0.2.{i}"} for i in (1, 2, 3)}
    hosts["n1"]["clusterctl_fence"] = fence
    data = {"all": {"children": {"cluster": {"hosts": hosts}}}}
    return write(tmp_path, "hosts.yml", yaml.safe_dump(data))


def test_a_fence_device_is_checked_before_anything_runs(tmp_path):
    secrets = tmp_path / "n1.secrets"
    secrets.write_text("password=s3cret\n")
    secrets.chmod(0o600)
    good = {"agent": "fence_ipmilan", "options": {"ip": "10.0.0.21"}, "secrets_file": str(secrets)}
    assert len(load_inventory(_fence_inventory(tmp_path, good))) == 3
    cases = [
        ({"agent": "ipmi; rm -rf /"}, "is not a fence agent's name"),
        ({"agent": "fence_ipmilan", "options": {"password": "x"}}, "credential in the inventory"),
        ({"agent": "fence_ipmilan", "options": {"ip": "a\nb"}}, "not a one-line value"),
        ({"agent": "fence_ipmilan", "plug": "x"}, "unknown keys ['plug']"),
        ({**good, "secrets_file": str(tmp_path / "none")}, "No such file or directory"),
        ({**good, "secrets_file": "rel/path"}, "is not an absolute path"),
    ]
    for fence, words in cases:
        with pytest.raises(ClusterctlError) as err:
            load_inventory(_fence_inventory(tmp_path, fence))
        assert words in str(err.value), str(err.value)
    secrets.chmod(0o644)
    with pytest.raises(ClusterctlError) as err:
        load_inventory(_fence_inventory(tmp_path, good))
    assert "only its owner can read (it is mode 644)" in str(err.value)
    assert err.value.hint == f"chmod 600 {secrets}"
