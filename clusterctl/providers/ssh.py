"""The ssh provider: existing hosts from the user's own inventory (YAML or INI)."""

from __future__ import annotations

from pathlib import Path

from clusterctl.errors import ClusterctlError
from clusterctl.inventory import InventoryNode, load_inventory
from clusterctl.profiles import DEFAULT_PROFILE
from clusterctl.providers.base import Provider
from clusterctl.reporter import Reporter
from clusterctl.state import ClusterRecord, NodeRecord, StateDir

DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


class SshProvider(Provider):
    name = "ssh"
    ssh_wait_s = 8.0

    def __init__(
        self,
        state: StateDir,
        reporter: Reporter,
        inventory: Path | None,
        profile: str = DEFAULT_PROFILE,
    ) -> None:
        super().__init__(state, reporter)
        self.profile = profile
        self.inventory = inventory.resolve() if inventory else None
        self._nodes: dict[str, InventoryNode] = {}

    def ensure_nodes(
        self, record: ClusterRecord | None
    ) -> tuple[ClusterRecord, list[InventoryNode]]:
        cluster = self.state.cluster
        if record is not None and record.provider != self.name:
            raise ClusterctlError(
                f"cluster {cluster!r} already exists with the {record.provider} provider",
                "choose another --cluster name for your hosts",
            )
        source = self.inventory or (Path(record.source_inventory) if record else None)
        if source is None:
            raise ClusterctlError(
                "the ssh provider needs an inventory", "pass -i INVENTORY (see inventories/sample/)"
            )
        nodes = load_inventory(source)
        self._nodes = {n.name: n for n in nodes}
        for node in nodes:
            self.key_for(node)  # fail early on a missing key file
        new_record = ClusterRecord(
            name=cluster,
            provider=self.name,
            source_inventory=str(source),
            nodes=[NodeRecord(n.name, n.cluster_address) for n in nodes],
            converged=bool(record and record.converged),
            profile=self.profile,
            etcd_members=list(record.etcd_members) if record else [],
        )
        self.state.save(new_record)
        return new_record, nodes

    def key_for(self, node: InventoryNode) -> Path:
        if node.key_file:
            path = Path(node.key_file).expanduser()
            if not path.is_file():
                raise ClusterctlError(
                    f"SSH key {path} of node {node.name} does not exist",
                    "fix ansible_ssh_private_key_file in the inventory",
                )
            return path
        for name in DEFAULT_KEYS:
            path = Path.home() / ".ssh" / name
            if path.is_file():
                return path
        raise ClusterctlError(
            f"no SSH key for node {node.name}",
            "set ansible_ssh_private_key_file in the inventory, or create ~/.ssh/id_ed25519",
        )

    def inventory_path(self, record: ClusterRecord) -> Path:
        return Path(record.source_inventory)

    def extravars(self) -> dict:
        # Host keys collected at first contact are checked strictly on every later run.
        return {
            "ansible_ssh_extra_args": f"-o UserKnownHostsFile={self.state.known_hosts} "
            "-o StrictHostKeyChecking=yes",
            "clusterctl_cluster": self.state.cluster,
            "clusterctl_provider": self.name,
            "clusterctl_profile": self.profile,
            **self.state.secret_vars(),
        }

    def destroy(self, record: ClusterRecord | None) -> list[str]:
        # The hosts are the user's: forgetting the cluster is all `down` does here.
        return []
