"""The sandbox provider: nodes are systemd containers on a private podman network."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from clusterctl import fenced
from clusterctl.errors import ClusterctlError
from clusterctl.fenced import FENCE_PORT
from clusterctl.inventory import MIN_NODES, InventoryNode, check_node_count, render_inventory
from clusterctl.pki import ClusterCA
from clusterctl.profiles import AGENT_PROFILES, DEFAULT_PROFILE, VM_PORT, VM_STATUS_PATH
from clusterctl.providers.base import Provider
from clusterctl.providers.image import PROFILE_LAYERS, ensure_profile_image, image_name
from clusterctl.providers.network import (
    FIRST_HOST,
    MAX_NODES,
    VIP_HOST,
    choose_subnet,
    clashes,
    host_networks,
    is_host_address,
    node_address,
    node_mac,
    parse_subnet,
    vip_address,
)
from clusterctl.providers.podman_cli import Podman
from clusterctl.providers.rtbudget import NODE_BUDGET_US, RtBudget
from clusterctl.reporter import Reporter
from clusterctl.state import ClusterRecord, NodeRecord, StateDir, write_private

LABEL = "clusterctl.cluster"
KVM_DEVICE = "/dev/kvm"
TUN_DEVICE = "/dev/net/tun"  # the guest's tap network (roles/vm)
SHARED_DIR = "/srv/clusterctl/shared"  # in every node: the host's <state>/<cluster>/shared


def container_name(cluster: str, node: str) -> str:
    return f"{cluster}-{node}"


def network_name(cluster: str) -> str:
    return f"clusterctl-{cluster}"


class PodmanProvider(Provider):
    name = "podman"

    def __init__(
        self,
        state: StateDir,
        reporter: Reporter,
        nodes: int | None = None,  # None: an existing cluster's count, else MIN_NODES
        subnet: str | None = None,
        podman: Podman | None = None,
        profile: str = DEFAULT_PROFILE,
    ) -> None:
        super().__init__(state, reporter)
        self.profile = profile
        self.node_count = nodes
        self.subnet = subnet
        self.podman = podman or Podman(state.root)
        # addresses of nodes made anew in this run: their old host keys are void
        self.recreated: list[str] = []
        self.started: list[str] = []  # nodes found stopped and started (disks kept)

    # -- planning ---------------------------------------------------------------------------

    def _taken_networks(self, own_network: str) -> list[ipaddress.IPv4Network]:
        taken = host_networks()
        for net in self.podman.networks():
            if net.get("name") == own_network:
                continue
            for sub in net.get("subnets") or []:
                try:
                    parsed = ipaddress.ip_network(sub["subnet"], strict=False)
                except (KeyError, ValueError):
                    continue
                if isinstance(parsed, ipaddress.IPv4Network):
                    taken.append(parsed)
        return taken

    def _plan(self, existing: ClusterRecord | None) -> ClusterRecord:
        cluster = self.state.cluster
        if self.node_count is not None:
            check_node_count(self.node_count, "--nodes")
        if existing is not None:
            if existing.provider != self.name:
                raise ClusterctlError(
                    f"cluster {cluster!r} already exists with the {existing.provider} provider",
                    f"choose another --cluster name, or `clusterctl down --cluster {cluster}`",
                )
            if self.subnet and parse_subnet(self.subnet) != ipaddress.ip_network(existing.subnet):
                raise ClusterctlError(
                    f"cluster {cluster!r} already exists on subnet {existing.subnet}",
                    "omit --subnet, or `clusterctl down` the cluster first",
                )
            existing.profile = self.profile
            if self.node_count is not None and len(existing.nodes) != self.node_count:
                raise ClusterctlError(
                    f"cluster {cluster!r} already exists with {len(existing.nodes)} nodes",
                    f"omit --nodes, or `clusterctl down --cluster {cluster}` and start again",
                )
            return existing
        network = network_name(cluster)
        self.node_count = self.node_count or MIN_NODES
        if self.node_count > MAX_NODES:
            raise ClusterctlError(
                f"--nodes {self.node_count} is more than a sandbox holds ({MAX_NODES})",
                f"node addresses run from .{FIRST_HOST} up to the VIP's .{VIP_HOST}; use "
                "--provider ssh for larger clusters",
            )
        nodes = [f"node{i}" for i in range(1, self.node_count + 1)]
        if self.podman.network_exists(network):
            raise ClusterctlError(
                f"a podman network named {network} already exists",
                "choose another --cluster name, or remove that network",
            )
        taken = self._taken_networks(network)
        if self.subnet:
            subnet = parse_subnet(self.subnet)
            overlap = clashes(subnet, taken)
            if overlap:
                raise ClusterctlError(
                    f"subnet {subnet} clashes with existing network {overlap[0]}",
                    "pick a free subnet, or omit --subnet to have one chosen",
                )
        else:
            subnet = choose_subnet(cluster, taken)
        last = node_address(subnet, self.node_count)
        if not (is_host_address(subnet, vip_address(subnet)) and is_host_address(subnet, last)):
            raise ClusterctlError(
                f"subnet {subnet} is too small for {self.node_count} nodes and the VIP",
                "use a /24 or larger, or omit --subnet",
            )
        for node in nodes:
            name = container_name(cluster, node)
            if self.podman.container_exists(name):
                raise ClusterctlError(
                    f"a container named {name} already exists and does not belong to a "
                    f"clusterctl cluster {cluster!r}",
                    "choose another --cluster name, or remove that container",
                )
        return ClusterRecord(
            name=cluster,
            provider=self.name,
            network=network,
            subnet=str(subnet),
            image=image_name(self.profile),
            vip=vip_address(subnet),
            profile=self.profile,
            nodes=[
                NodeRecord(
                    name=node,
                    address=node_address(subnet, i),
                    container=container_name(cluster, node),
                    mac=node_mac(cluster, node),
                )
                for i, node in enumerate(nodes, 1)
            ],
        )

    # -- creating ---------------------------------------------------------------------------

    def ensure_nodes(
        self, record: ClusterRecord | None
    ) -> tuple[ClusterRecord, list[InventoryNode]]:
        record = self._plan(record)
        # Recorded before anything exists, so `down` can clean up an interrupted `up`.
        self.state.save(record)
        self._ensure_ssh_key()
        record.image = ensure_profile_image(self.podman, self.reporter, record.profile)
        self.state.save(record)
        if not self.podman.network_exists(record.network):
            self.reporter.progress(f"creating network {record.network} ({record.subnet})")
            self.podman.run(
                "network", "create", "--subnet", record.subnet,
                "--label", f"{LABEL}={record.name}", record.network,
            )  # fmt: skip
        realtime = self._realtime_members(record)
        for node in record.nodes:
            self._ensure_container(record, node, node.name in realtime)
        return record, [InventoryNode(n.name, n.address) for n in record.nodes]

    def _gateway(self, record: ClusterRecord) -> str:
        """The host's address on the cluster's network (podman's gateway of the bridge)."""
        network = self.podman.json("network", "inspect", record.network)[0]
        return str((network.get("subnets") or [{}])[0].get("gateway", ""))

    def ensure_fence_device(self, record: ClusterRecord) -> None:
        """The nodes' fence device (clusterctl/fenced.py) on the host's bridge address, with
        a certificate of the cluster's CA for that address."""
        gateway = self._gateway(record)
        ClusterCA(self.state.pki_dir, record.name).ensure_fence_device(gateway)
        if fenced.start(self.state, gateway):
            self.reporter.progress(f"started the nodes' fence device on {gateway}:{FENCE_PORT}")

    def fence_vars(self, record: ClusterRecord) -> dict:
        """Inventory variables of the sandbox's fencing: each node is fenced by Debian's
        fence_docker through the host's fence device, authenticated by the node's own
        certificate (the agent role installs it; the plug defaults to the node's name)."""
        if record.profile not in AGENT_PROFILES or not record.fencing:
            return {}
        tls = "/etc/clusterctl/tls"
        options = {
            "ip": self._gateway(record),
            "ipport": FENCE_PORT,
            "ssl_secure": 1,
            "tlscert": f"{tls}/node.crt",
            "tlskey": f"{tls}/node.key",
            "tlscacert": f"{tls}/ca.crt",
        }
        return {"clusterctl_fence": {"agent": "fence_docker", "options": options}}

    def _realtime_members(self, record: ClusterRecord) -> set[str]:
        """The etcd-member nodes that get real-time CPU time (rtbudget.py); empty where the
        host needs none or has none to give."""
        budget = RtBudget()
        if record.profile not in AGENT_PROFILES or not budget.supported():
            return set()
        try:
            budget.ensure_parent()  # before any node starts: their configuration needs it
        except OSError as exc:
            self.reporter.warn(
                f"no real-time CPU time for etcd ({exc}): it runs at normal priority"
            )
            return set()
        return set(record.etcd_member_names())

    def _ensure_container(self, record: ClusterRecord, node: NodeRecord, realtime: bool) -> None:
        if self.podman.container_exists(node.container):
            state = self.podman.json("inspect", "--type", "container", node.container)[0]
            status = state.get("State", {}).get("Status", "")
            if status == "created":
                # an `up` interrupted inside `podman run`: never booted, so nothing to keep,
                # and its half-made network setup would make `podman start` fail
                self.podman.run("rm", "-f", "-t", "0", node.container)
            elif not state.get("State", {}).get("Running"):
                self.reporter.progress(f"starting {node.container}")
                started = self.podman.run("start", node.container, check=False)
                if started.returncode == 0:
                    self.started.append(node.name)
                elif "rt_runtime" in started.stderr:
                    # its etcd's real-time share is taken (by another cluster's nodes):
                    # never re-create a node that has data for that
                    raise ClusterctlError(
                        f"{node.container} cannot start: podman's cgroup has no real-time CPU "
                        "time left for it",
                        "stop another sandbox cluster (`clusterctl down`), or raise "
                        f"{RtBudget().parent}/cpu.rt_runtime_us",
                    )
                else:
                    # typically a node whose first boot was interrupted; the roles rebuild it
                    self.reporter.warn(f"{node.container} did not start; re-creating it")
                    self.podman.run("rm", "-f", "-t", "0", node.container)
        if not self.podman.container_exists(node.container):
            self.recreated.append(node.address)
            self.reporter.progress(f"creating {node.container} at {node.address}")
            extra: list[str] = []
            if realtime and RtBudget().free() >= NODE_BUDGET_US:
                extra = ["--cpu-rt-runtime", str(NODE_BUDGET_US)]
            elif realtime:
                self.reporter.warn(
                    f"no real-time CPU time left for etcd on {node.name} (other clusters use "
                    "it): it runs at normal priority"
                )
            self.podman.run(
                "run", "-d", "--name", node.container, "--hostname", node.name,
                "--label", f"{LABEL}={record.name}",
                "--network", record.network, "--ip", node.address, "--mac-address", node.mac,
                "--systemd=always",
                "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
                # systemd may raise the agent's and etcd's CPU priority (Nice=, as on a host)
                "--cap-add", "SYS_NICE",
                "--sysctl", "net.ipv4.ip_forward=1",
                "--sysctl", "net.ipv4.ip_nonlocal_bind=1",
                # storage every node reaches, standing for a site's NFS export or SAN
                "--volume", f"{self._shared_dir()}:{SHARED_DIR}",
                *self._device_args(record),
                *extra,
                record.image,
            )  # fmt: skip
        public_key = (self.key_path().with_suffix(".pub")).read_bytes()
        self.podman.run(
            "exec", "-i", node.container, "sh", "-c",
            "umask 077; mkdir -p /root/.ssh; cat > /root/.ssh/authorized_keys",
            stdin=public_key,
        )  # fmt: skip

    @staticmethod
    def _device_args(record: ClusterRecord) -> list[str]:
        """The vm profile's nodes: /dev/net/tun for the guest's tap network, and /dev/kvm
        where the host has it (the vm role probes whether a guest really boots with it, and
        falls back to TCG)."""
        if record.profile != "vm":
            return []
        devices = [TUN_DEVICE] + ([KVM_DEVICE] if Path(KVM_DEVICE).exists() else [])
        return [arg for device in devices for arg in ("--device", device)]

    def power_states(self, record: ClusterRecord) -> dict[str, str]:
        found = self.podman.json("ps", "-a", "--filter", f"label={LABEL}={record.name}",
                                 "--format", "json")  # fmt: skip
        seen = {name: c.get("State", "") for c in found for name in c.get("Names") or []}

        def power(container: str) -> str:
            if container not in seen:
                return "missing"
            # anything but running or paused (exited, created, ...) is stopped
            return seen[container] if seen[container] in ("running", "paused") else "stopped"

        return {n.name: power(n.container) for n in record.nodes}

    def new_host_addresses(self) -> list[str]:
        return list(self.recreated)

    def started_nodes(self) -> list[str]:
        return list(self.started)

    def key_path(self) -> Path:
        return self.state.ssh_key

    def _ensure_ssh_key(self) -> None:
        key = self.key_path()
        if key.exists() and key.with_suffix(".pub").exists():
            return
        key.unlink(missing_ok=True)
        comment = f"clusterctl-{self.state.cluster}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
            check=True,
            capture_output=True,
        )
        key.chmod(0o600)

    def key_for(self, node: InventoryNode) -> Path:
        return self.key_path()

    def inventory_path(self, record: ClusterRecord) -> Path:
        nodes = [InventoryNode(n.name, n.address) for n in record.nodes]
        text = render_inventory(
            record.name, nodes, self.key_path(), self.state.known_hosts,
            extra_vars={
                "clusterctl_provider": self.name,
                "clusterctl_profile": record.profile,
                "clusterctl_subnet": record.subnet,
                "clusterctl_vip": record.vip,
                "clusterctl_lb_engine": record.lb_engine,
                "clusterctl_lease_ttl": record.lease_ttl,
                "clusterctl_vip_prefix": ipaddress.ip_network(record.subnet).prefixlen,
                "clusterctl_shared_dir": SHARED_DIR,
                "clusterctl_vm_port": VM_PORT,
                "clusterctl_vm_check_path": VM_STATUS_PATH,
                **self.fence_vars(record),
                **self.state.secret_vars(),
            },
        )  # fmt: skip
        path = self.state.inventory
        if not path.exists() or path.read_text() != text:
            write_private(path, text)
        return path

    # -- scaling ----------------------------------------------------------------------------

    def add_nodes(self, record: ClusterRecord, count: int) -> list[InventoryNode]:
        """Create `count` more nodes (next free names and addresses); return them."""
        subnet = ipaddress.ip_network(record.subnet)
        taken_names = {n.name for n in record.nodes}
        taken_addresses = {n.address for n in record.nodes} | {record.vip}
        new: list[NodeRecord] = []
        index = 1
        while len(new) < count:
            name = f"node{index}"
            address = node_address(subnet, index)
            index += 1
            if name in taken_names or address in taken_addresses:
                continue
            if ipaddress.ip_address(address) not in subnet or address == record.vip:
                raise ClusterctlError(
                    f"subnet {record.subnet} has no room for {count} more nodes",
                    "create the cluster on a larger --subnet",
                )
            container = container_name(record.name, name)
            new.append(NodeRecord(name, address, container, node_mac(record.name, name)))
        record.nodes.extend(new)
        self.state.save(record)  # recorded first: `down` cleans up an interrupted scale
        for node in new:
            self._ensure_container(record, node, realtime=False)  # members stay the first ones
        return [InventoryNode(n.name, n.address) for n in new]

    def remove_node(self, record: ClusterRecord, name: str) -> None:
        node = next(n for n in record.nodes if n.name == name)
        if self.podman.container_exists(node.container):
            self.podman.run("rm", "-f", "-t", "10", node.container)
        record.nodes = [n for n in record.nodes if n.name != name]
        self.state.save(record)

    # -- removing ---------------------------------------------------------------------------

    def _shared_dir(self) -> Path:
        path = self.state.path / "shared"
        path.mkdir(mode=0o755, exist_ok=True)
        return path

    def destroy(self, record: ClusterRecord | None) -> list[str]:
        cluster = self.state.cluster
        if fenced.stop(self.state):
            self.reporter.progress("stopped the nodes' fence device")
        names = set(self.podman.containers_with_label(f"{LABEL}={cluster}"))
        if record is not None:
            names.update(n.container for n in record.nodes if n.container)
        removed = []
        for name in sorted(names):
            if self.podman.container_exists(name):
                self.reporter.progress(f"removing container {name}")
                self.podman.run("rm", "-f", "-t", "0", name)
                removed.append(f"container {name}")
        network = record.network if record and record.network else network_name(cluster)
        if self.podman.network_exists(network):
            labels = self.podman.json("network", "inspect", network)[0].get("labels") or {}
            if labels.get(LABEL) == cluster:
                self.podman.run("network", "rm", network)
                removed.append(f"network {network}")
        return removed

    def purge_image(self) -> list[str]:
        """Remove the profile layers, then the node image they are built on."""
        removed = []
        for name in [*(image_name(p) for p in PROFILE_LAYERS), image_name()]:
            if not self.podman.image_exists(name):
                continue
            proc = self.podman.run("image", "rm", name, check=False)
            if proc.returncode != 0:
                self.reporter.warn(f"image {name} kept: {proc.stderr.strip()[-200:]}")
                continue
            removed.append(f"image {name}")
        return removed
