"""The state directory of a cluster: generated inventory, SSH key, known_hosts, metadata.

Layout (root is `$CLUSTERCTL_STATE_DIR`, default `~/.local/state/clusterctl`)::

    <root>/containers.conf        private podman config (never the user's global one)
    <root>/<cluster>/cluster.json what `up` created: provider, network, subnet, nodes
    <root>/<cluster>/inventory.yml generated Ansible inventory
    <root>/<cluster>/id_ed25519   SSH key (0600)
    <root>/<cluster>/known_hosts  host keys collected at first contact
    <root>/<cluster>/api-token    bearer token of the agents' API (0600)
    <root>/<cluster>/pki/         the cluster's CA and certificates (clusterctl/pki.py)
    <root>/<cluster>/etcd-root-password, etcd-agent-password   etcd RBAC users' passwords
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clusterctl.errors import ClusterctlError
from clusterctl.profiles import LEGACY_PROFILE
from clusterctl.topology import etcd_member_nodes

CLUSTER_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")


def state_root() -> Path:
    env = os.environ.get("CLUSTERCTL_STATE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "state" / "clusterctl"


def validate_cluster_name(name: str) -> str:
    if not isinstance(name, str) or not CLUSTER_NAME_RE.fullmatch(name):
        raise ClusterctlError(
            f"invalid cluster name {name!r}",
            "use 1-31 characters: lower-case letters, digits and '-', starting with a letter",
        )
    return name


@dataclass
class NodeRecord:
    """One node as the controller knows it."""

    name: str
    address: str
    container: str = ""  # podman provider only
    mac: str = ""


@dataclass
class ClusterRecord:
    """What `up` recorded about a cluster; written before anything is created,
    so that `down` can clean up after an interrupted `up`."""

    name: str
    provider: str
    network: str = ""
    subnet: str = ""
    image: str = ""
    source_inventory: str = ""  # ssh provider: the user's inventory
    profile: str = LEGACY_PROFILE
    vip: str = ""
    lb_engine: str = "nft"  # profile lb: nft (kernel L4) or haproxy
    lease_ttl: int = 1  # agent member lease, whole seconds (the other timings scale with it)
    nodes: list[NodeRecord] = field(default_factory=list)
    converged: bool = False
    # etcd and the agents speak TLS (false in records of clusters built before they did:
    # the next `up` upgrades those in place)
    tls: bool = False
    # sandbox: the nodes fence each other through the host's fence device (clusterctl/fenced.py)
    fencing: bool = False
    # the operator's own resource groups (`up --groups FILE`), in the agent's group syntax
    groups: list[dict] = field(default_factory=list)
    # the nodes that run an etcd member, fixed when the cluster is made: scaling out never
    # changes them (a 4-node cluster grown to 5 keeps its 3 members)
    etcd_members: list[str] = field(default_factory=list)

    def require_node(self, name: str) -> NodeRecord:
        """The node called ``name``; one clear error naming the nodes there are if none is."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise ClusterctlError(
            f"unknown node {name!r} in cluster {self.name}",
            f"nodes are: {', '.join(n.name for n in self.nodes)}",
        )

    def etcd_member_names(self) -> list[str]:
        """The recorded members; for a record written before they were recorded, the
        topology rule over its nodes."""
        if self.etcd_members:
            return list(self.etcd_members)
        return [n.name for n in etcd_member_nodes(self.nodes)]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterRecord:
        data = json.loads(text)
        nodes = [NodeRecord(**n) for n in data.pop("nodes", [])]
        return cls(nodes=nodes, **data)


class StateDir:
    """Paths of one cluster's state; secrets are written with mode 0600."""

    def __init__(self, cluster: str, root: Path | None = None) -> None:
        self.cluster = validate_cluster_name(cluster)
        self.root = root or state_root()
        self.path = self.root / cluster

    @property
    def record_file(self) -> Path:
        return self.path / "cluster.json"

    @property
    def inventory(self) -> Path:
        return self.path / "inventory.yml"

    @property
    def ssh_key(self) -> Path:
        return self.path / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.path / "known_hosts"

    @property
    def api_token(self) -> Path:
        return self.path / "api-token"

    @property
    def pki_dir(self) -> Path:
        return self.path / "pki"

    @property
    def etcd_root_password(self) -> Path:
        return self.path / "etcd-root-password"

    @property
    def etcd_agent_password(self) -> Path:
        return self.path / "etcd-agent-password"

    @property
    def munge_key(self) -> Path:
        """The hpc profile's one munge key (every node's package made its own)."""
        return self.path / "munge.key"

    def secret_vars(self) -> dict[str, str]:
        """Where the playbooks find the cluster's secrets on the controller (paths only:
        the values never appear in an inventory, a command line or a log)."""
        return {
            "clusterctl_api_token_file": str(self.api_token),
            "clusterctl_pki_dir": str(self.pki_dir),
            "clusterctl_etcd_root_password_file": str(self.etcd_root_password),
            "clusterctl_etcd_agent_password_file": str(self.etcd_agent_password),
            "clusterctl_munge_key_file": str(self.munge_key),
        }

    @property
    def runner_dir(self) -> Path:
        return self.path / "runner"

    def exists(self) -> bool:
        return self.record_file.exists()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)

    def load(self) -> ClusterRecord:
        try:
            return ClusterRecord.from_json(self.record_file.read_text())
        except FileNotFoundError:
            raise ClusterctlError(
                f"cluster {self.cluster!r} does not exist (no state in {self.path})",
                "create it with `clusterctl up --cluster NAME`",
            ) from None
        except (ValueError, TypeError) as exc:
            raise ClusterctlError(
                f"state file {self.record_file} is damaged: {exc}",
                f"remove the cluster with `clusterctl down --cluster {self.cluster}`",
            ) from None

    def save(self, record: ClusterRecord) -> None:
        self.create()
        write_private(self.record_file, record.to_json())

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_private(path: Path, content: str) -> None:
    """Write a file readable only by its owner, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_token(path: Path) -> str:
    """The token in use: the file's first line (a rotation adds a second one for a while)."""
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return lines[0] if lines else ""


def ensure_token(path: Path) -> str:
    """A token, generated once (0600) and reused on every later run."""
    if path.exists() and read_token(path):
        return read_token(path)
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token


def ensure_key_file(path: Path, size: int) -> None:
    """Random key bytes, generated once (0600) and reused on every later run."""
    if path.exists() and path.stat().st_size >= size:
        return
    path.write_bytes(b"")
    path.chmod(0o600)
    path.write_bytes(secrets.token_bytes(size))


def list_clusters(root: Path | None = None) -> list[str]:
    base = root or state_root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "cluster.json").exists())
