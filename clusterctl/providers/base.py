"""What every provider offers the controller."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from clusterctl.errors import ClusterctlError
from clusterctl.inventory import InventoryNode
from clusterctl.profiles import DEFAULT_PROFILE
from clusterctl.reporter import Reporter
from clusterctl.state import ClusterRecord, StateDir


class Provider(ABC):
    """Makes (or finds) the machines of a cluster; reports through a reporter, never prints."""

    name: str
    profile: str = DEFAULT_PROFILE
    # how long to wait for sshd on every node: fresh containers need a few seconds,
    # existing hosts answer at once or not at all
    ssh_wait_s: float = 60.0

    def __init__(self, state: StateDir, reporter: Reporter) -> None:
        self.state = state
        self.reporter = reporter

    @abstractmethod
    def ensure_nodes(
        self, record: ClusterRecord | None
    ) -> tuple[ClusterRecord, list[InventoryNode]]:
        """Create or start what is missing; return the record and the reachable nodes."""

    @abstractmethod
    def key_for(self, node: InventoryNode) -> Path:
        """The private key used to reach a node."""

    @abstractmethod
    def inventory_path(self, record: ClusterRecord) -> Path:
        """The inventory Ansible runs against."""

    def new_host_addresses(self) -> list[str]:
        """Addresses whose machines were made anew, so their recorded host keys are void."""
        return []

    def started_nodes(self) -> list[str]:
        """Nodes this run found stopped and started again, with what they had kept."""
        return []

    def power_states(self, record: ClusterRecord) -> dict[str, str]:
        """Each node's machine state as the provider sees it ("running", "stopped",
        "paused", "missing"); empty when the provider cannot tell (existing hosts)."""
        return {}

    def extravars(self) -> dict:
        """Variables passed to every playbook run (e.g. SSH options)."""
        return {}

    def ensure_fence_device(self, record: ClusterRecord) -> None:
        """Start the nodes' fence device where the provider has one (the sandbox); real
        hosts name theirs in the inventory (``clusterctl_fence``)."""
        raise ClusterctlError(
            f"the {record.provider} provider has no fence device of its own",
            "name each host's device in the inventory (clusterctl_fence)",
        )

    @abstractmethod
    def destroy(self, record: ClusterRecord | None) -> list[str]:
        """Remove what the provider made; return a sentence per removed thing."""
