"""Cluster inventories: reading a user's (YAML or INI) and writing the generated one.

Nodes are the hosts of the `cluster` group (or every host when there is no such group).
A cluster needs at least three, so that a majority survives one failure.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from ansible.module_utils.parsing.convert_bool import boolean

from clusterctl.agent.config import NAME_RE, is_name
from clusterctl.errors import ClusterctlError

if TYPE_CHECKING:
    from clusterctl.state import ClusterRecord

MIN_NODES = 3
NODE_GROUP = "cluster"


@dataclass(frozen=True)
class InventoryNode:
    """A node with what the controller needs to reach it over SSH."""

    name: str
    address: str  # where SSH connects (ansible_host)
    port: int = 22
    user: str = "root"
    key_file: str = ""
    node_address: str = ""  # the address the cluster uses, if not ansible_host

    @property
    def cluster_address(self) -> str:
        """The node's address in the cluster (etcd, the agents, its certificate): one rule,
        as in the roles: clusterctl_node_address, else ansible_host."""
        return self.node_address or self.address


_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


def _node_from_vars(name: str, hv: dict, source: str) -> InventoryNode:
    """One host of the inventory, every value checked: a bad one is one clear line."""
    where = f"inventory {source}, host {name!r}"
    if not is_name(name):
        raise ClusterctlError(
            f"{where}: not a valid node name",
            f"use letters, digits, '.', '_' and '-' (pattern {NAME_RE.pattern})",
        )
    address = str(hv.get("ansible_host", name))
    if not (_is_ip(address) or _is_hostname(address)):
        raise ClusterctlError(f"{where}: ansible_host {address!r} is not a host name or IP", "")
    node_address = str(hv.get("clusterctl_node_address", "") or "")
    cluster_address = node_address or address
    if not _is_ip(cluster_address):
        raise ClusterctlError(
            f"{where}: the cluster needs an IP address, not {cluster_address!r}",
            "set ansible_host (or clusterctl_node_address) to the node's IP address: "
            "certificates and the nft guard name addresses",
        )
    raw_port = hv.get("ansible_port", 22)
    try:
        port = int(str(raw_port).strip())
    except ValueError:
        port = -1
    if isinstance(raw_port, bool) or not 1 <= port <= 65535:
        raise ClusterctlError(f"{where}: ansible_port {raw_port!r} is not a port 1-65535", "")
    user = str(hv.get("ansible_user", "root"))
    if not _USER.fullmatch(user):
        raise ClusterctlError(f"{where}: ansible_user {user!r} is not a user name", "")
    if user != "root" and not _is_true(hv.get("ansible_become", False)):
        raise ClusterctlError(
            f"{where}: ansible_user {user} is not root and ansible_become is not set",
            "clusterctl installs and runs services as root: set ansible_become=true (sudo)",
        )
    key_file = str(hv.get("ansible_ssh_private_key_file", "") or "")
    if "\n" in key_file or "\0" in key_file:
        raise ClusterctlError(f"{where}: ansible_ssh_private_key_file is not a path", "")
    if hv.get("clusterctl_fence") is not None:
        check_fence_device(where, hv["clusterctl_fence"])
    return InventoryNode(name, address, port, user, key_file, node_address)


_FENCE_AGENT = re.compile(r"fence_[a-z0-9_]{1,40}")
_FENCE_OPTION = re.compile(r"[a-z][a-z0-9_-]{0,40}")
FENCE_HINT = (
    "clusterctl_fence: {agent: fence_ipmilan, options: {ip: 10.0.0.21, username: admin}, "
    "secrets_file: /root/fence/node1.secrets} (README, Fencing)"
)


def check_fence_device(where: str, spec: object) -> None:
    """A host's ``clusterctl_fence``, checked before anything runs: a fence agent's name,
    options that are names and one-line values (never a password: those belong in the
    secrets file), and a secrets file on this controller that only its owner can read."""
    if not isinstance(spec, dict):
        raise ClusterctlError(f"{where}: clusterctl_fence is not a mapping", FENCE_HINT)
    unknown = sorted(str(k) for k in set(spec) - {"agent", "options", "secrets_file"})
    if unknown:
        raise ClusterctlError(f"{where}: clusterctl_fence has unknown keys {unknown}", FENCE_HINT)
    agent = spec.get("agent")
    if not isinstance(agent, str) or not _FENCE_AGENT.fullmatch(agent):
        raise ClusterctlError(
            f"{where}: clusterctl_fence agent {agent!r} is not a fence agent's name",
            "name one of Debian's fence-agents, e.g. fence_ipmilan or fence_redfish",
        )
    options = spec.get("options") or {}
    if not isinstance(options, dict):
        raise ClusterctlError(f"{where}: clusterctl_fence options is not a mapping", FENCE_HINT)
    for key, value in options.items():
        if not isinstance(key, str) or not _FENCE_OPTION.fullmatch(key):
            raise ClusterctlError(f"{where}: fence option {key!r} is not an option name", "")
        if "pass" in key:
            raise ClusterctlError(
                f"{where}: fence option {key} would put a credential in the inventory",
                "write it as a line `password=...` in the file secrets_file names (mode 0600)",
            )
        if isinstance(value, dict | list) or any(c in str(value) for c in "\n\r\0"):
            raise ClusterctlError(f"{where}: fence option {key} is not a one-line value", "")
    secrets = spec.get("secrets_file")
    if secrets is None:
        return
    path = Path(str(secrets))
    if not path.is_absolute():
        raise ClusterctlError(
            f"{where}: clusterctl_fence secrets_file {secrets!r} is not an absolute path", ""
        )
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ClusterctlError(
            f"{where}: fence secrets_file {path}: {exc.strerror or exc}",
            "create it on this controller: one `name=value` line per secret option, mode 0600",
        ) from None
    if not path.is_file() or mode & 0o077:
        raise ClusterctlError(
            f"{where}: fence secrets_file {path} must be a file only its owner can read "
            f"(it is mode {mode & 0o777:o})",
            f"chmod 600 {path}",
        )


def _is_true(value: object) -> bool:
    try:
        return boolean(value, strict=True)
    except TypeError:
        return False


def _is_hostname(text: str) -> bool:
    """RFC 1123 host name (labels checked one by one: no regex backtracking on long input)."""
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    return 0 < len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_node_count(count: int, source: str) -> None:
    if count < MIN_NODES:
        raise ClusterctlError(
            f"{source} has {count} node{'s' if count != 1 else ''}; a cluster needs at least "
            f"{MIN_NODES}",
            "a majority (quorum) must survive the loss of one node, which needs 3 or more nodes",
        )


def check_unique(nodes: Iterable[InventoryNode]) -> None:
    names: dict[str, int] = {}
    addresses: dict[tuple[str, int], str] = {}
    for node in nodes:
        names[node.name] = names.get(node.name, 0) + 1
        key = (node.address, node.port)
        if key in addresses:
            raise ClusterctlError(
                f"nodes {addresses[key]} and {node.name} have the same address {node.address}",
                "give every node its own ansible_host",
            )
        addresses[key] = node.name
    duplicated = sorted(name for name, count in names.items() if count > 1)
    if duplicated:
        raise ClusterctlError(
            f"node name {duplicated[0]} appears more than once in the inventory",
            "every node needs a unique name",
        )


class _DuplicateKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses repeated keys (plain PyYAML keeps the last silently)."""


def _construct_mapping(loader: _DuplicateKeyLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key.startswith(("ansible_", "clusterctl_")):
                raise ClusterctlError(
                    f"variable {key} is set twice in the same place of the inventory (line {line})",
                    "keep one of them (YAML would silently use the last)",
                )
            raise ClusterctlError(
                f"node name {key} appears more than once in the inventory (line {line})",
                "every node needs a unique name",
            )
        seen.add(key)
    return loader.construct_mapping(node)


_DuplicateKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)

_INI_SECTION = re.compile(r"^\[([^\]]+)\]\s*$")


def _check_ini_duplicates(text: str) -> None:
    section = "ungrouped"
    seen: dict[str, set[str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        match = _INI_SECTION.match(line)
        if match:
            section = match.group(1)
            continue
        if ":" in section:  # [group:vars] and [group:children] hold no hosts
            continue
        host = line.split()[0]
        if host in seen.setdefault(section, set()):
            raise ClusterctlError(
                f"node name {host} appears more than once in the inventory (line {number})",
                "every node needs a unique name",
            )
        seen[section].add(host)


def load_inventory(path: Path) -> list[InventoryNode]:
    """Parse a user inventory with Ansible's own parser and validate it."""
    if not path.is_file():
        raise ClusterctlError(f"inventory {path} not found", "pass an existing file with -i")
    text = path.read_text()
    looks_yaml = path.suffix in (".yml", ".yaml") or text.lstrip().startswith(("all:", "---"))
    try:
        if looks_yaml:
            yaml.load(text, Loader=_DuplicateKeyLoader)  # noqa: S506 - SafeLoader subclass
        else:
            _check_ini_duplicates(text)
    except yaml.YAMLError as exc:
        raise ClusterctlError(
            f"inventory {path} is not valid YAML: {exc}", "fix the file"
        ) from None

    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(path)])
    # host vars merged with group vars (and group_vars/ files), as a play would see them
    variables = VariableManager(loader=loader, inventory=manager)
    groups = manager.groups
    hosts = groups[NODE_GROUP].get_hosts() if NODE_GROUP in groups else manager.get_hosts()
    if not hosts and not manager.get_hosts():
        raise ClusterctlError(
            f"inventory {path} has no hosts Ansible can read",
            "see inventories/sample/ for the expected layout",
        )
    nodes = [
        _node_from_vars(host.name, variables.get_vars(host=host, include_hostvars=False), path)
        for host in hosts
    ]
    check_node_count(len(nodes), f"inventory {path}")
    check_unique(nodes)
    return nodes


def render_inventory(
    cluster: str,
    nodes: list[InventoryNode],
    key_file: Path,
    known_hosts: Path,
    extra_vars: dict | None = None,
) -> str:
    """The generated inventory: every node in group `cluster`, reached as root over SSH."""
    hosts: dict[str, dict] = {}
    for node in nodes:
        hosts[node.name] = {"ansible_host": node.address}
        if node.port != 22:
            hosts[node.name]["ansible_port"] = node.port
    variables = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(key_file),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
            "-o IdentitiesOnly=yes"
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
        "clusterctl_cluster": cluster,
    }
    variables.update(extra_vars or {})
    data = {"all": {"children": {NODE_GROUP: {"hosts": hosts}}, "vars": variables}}
    header = f"# generated by clusterctl for cluster {cluster}; `clusterctl up` rewrites it\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def reachable_nodes(record: ClusterRecord, fallback: bool = False) -> list[InventoryNode]:
    """The cluster's nodes as SSH reaches them: the recorded names and addresses or, on real
    hosts, the inventory's entry (address, user, port) of each recorded node. With
    ``fallback``, an inventory that cannot be read gives the recorded addresses (status
    probes what it can) instead of an error."""
    recorded = [InventoryNode(n.name, n.address) for n in record.nodes]
    if record.provider != "ssh":
        return recorded
    try:
        inventory = load_inventory(Path(record.source_inventory))
    except ClusterctlError:
        if fallback:
            return recorded
        raise
    known = {n.name for n in record.nodes}
    return [n for n in inventory if n.name in known]
