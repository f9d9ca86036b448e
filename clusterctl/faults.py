"""Faults injected into sandbox nodes, and how each is healed (`clusterctl chaos`, benches).

Each fault is what it says, done the way docs/machine-notes.md describes: a crash
is `podman kill` (no shutdown, addresses gone), a freeze is `podman pause` (cgroup freezer: the
node wakes later believing no time passed), a partition is an nft table inside the node that
drops everything on eth0 (addresses kept, so a fenced holder is visible), kills are SIGKILL
through systemd. Only the cluster's own containers are touched, by exact name.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

from clusterctl.agent.tls import TlsError, TlsFiles
from clusterctl.providers.podman_cli import Podman
from clusterctl.state import ClusterRecord, NodeRecord

PARTITION_TABLE = "clusterctl_chaos"
# Everything a node sends, receives and routes on its network: a VM's or a load balancer's
# forwarded traffic never enters the node's own stack (input/output), so it is cut too.
PARTITION_NFT = f"""table inet {PARTITION_TABLE} {{
 chain in {{ type filter hook input priority -300; iifname "eth0" drop; }}
 chain out {{ type filter hook output priority -300; oifname "eth0" drop; }}
 chain routed {{ type filter hook forward priority -300;
  iifname "eth0" drop; oifname "eth0" drop; }}
}}
"""

# fault name -> what it does, for --help and the report
KINDS = {
    "crash": "kill a node's container (power loss), start it again later",
    "freeze": "pause a node (hung machine), resume it later",
    "partition": "cut a node off the network (nft drop on eth0), heal later",
    "agent-kill": "SIGKILL the holder's agent (systemd restarts it)",
    "service-kill": "SIGKILL the web server on the holder",
    "etcd-leader-kill": "SIGKILL the etcd Raft leader (systemd restarts it)",
    "backend-kill": "stop the web server on a node that does not hold the group (lb only)",
}
LASTING = {"crash", "freeze", "partition", "backend-kill"}  # held for a while, then healed


@dataclass(frozen=True)
class Injected:
    kind: str
    node: str


class SandboxFaults:
    """Inject and heal faults on the nodes of one podman sandbox cluster."""

    def __init__(self, podman: Podman, record: ClusterRecord, tls: TlsFiles | None) -> None:
        self.podman = podman
        self.record = record
        self.nodes = {n.name: n for n in record.nodes}
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        if tls is not None:
            try:
                context = tls.client_context()
            except TlsError:
                context = None
            if context is not None:
                self._opener = urllib.request.build_opener(
                    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
                )
        self._scheme = "https" if tls is not None else "http"

    def _node(self, name: str) -> NodeRecord:
        return self.nodes[name]

    def _exec(self, node: str, *cmd: str, stdin: bytes | None = None) -> bool:
        args = ["exec", *(["-i"] if stdin is not None else []), self._node(node).container, *cmd]
        return self.podman.run(*args, check=False, stdin=stdin, timeout=30).returncode == 0

    def inject(self, kind: str, node: str) -> Injected:
        container = self._node(node).container
        match kind:
            case "crash":
                self.podman.run("kill", container, check=False, timeout=60)
            case "freeze":
                self.podman.run("pause", container, check=False, timeout=60)
            case "partition":
                self._exec(node, "nft", "-f", "-", stdin=PARTITION_NFT.encode())
            case "agent-kill":
                self._exec(node, "systemctl", "kill", "-s", "KILL", "clusterctl-agent")
            case "service-kill":
                self._exec(node, "systemctl", "kill", "-s", "KILL", "nginx")
            case "etcd-leader-kill":
                self._exec(node, "systemctl", "kill", "-s", "KILL", "etcd")
            case "backend-kill":
                self._exec(node, "systemctl", "kill", "-s", "KILL", "nginx")
            case _:
                raise ValueError(f"unknown fault {kind!r}")
        return Injected(kind, node)

    def heal(self, fault: Injected) -> None:
        """Undo ``fault`` (kills that systemd or the agent repair need nothing, but a unit
        that gave up is started again)."""
        node, container = fault.node, self._node(fault.node).container
        match fault.kind:
            case "crash":
                self.podman.run("start", container, check=False, timeout=120)
            case "freeze":
                self.podman.run("unpause", container, check=False, timeout=60)
            case "partition":
                self._exec(node, "nft", "delete", "table", "inet", PARTITION_TABLE)
            case "agent-kill":
                self._exec(node, "systemctl", "start", "--no-block", "clusterctl-agent")
            case "etcd-leader-kill":
                self._exec(node, "systemctl", "start", "--no-block", "etcd")
            case "backend-kill":
                self._exec(node, "systemctl", "start", "--no-block", "nginx")
            case "service-kill":
                pass  # the agent restarts it in place or moves the group: that is the test

    def heal_all(self) -> None:
        """Whatever state the nodes are in: running, connected, services started."""
        states = self.container_states()
        for name, node in self.nodes.items():
            state = states.get(name, "")
            if state == "paused":
                self.podman.run("unpause", node.container, check=False, timeout=60)
            elif state != "running":
                self.podman.run("start", node.container, check=False, timeout=120)
        for name in self.nodes:
            self._exec(name, "nft", "delete", "table", "inet", PARTITION_TABLE)
            self._exec(name, "systemctl", "start", "--no-block", "etcd", "clusterctl-agent")
            if self.record.profile == "lb":
                self._exec(name, "systemctl", "start", "--no-block", "nginx")

    def container_states(self) -> dict[str, str]:
        states = {}
        for name, node in self.nodes.items():
            proc = self.podman.run(
                "inspect", "--format", "{{.State.Status}}", node.container, check=False
            )
            states[name] = proc.stdout.strip() if proc.returncode == 0 else "missing"
        return states

    def etcd_leader(self, members: list[str]) -> str | None:
        """The node whose etcd member leads Raft, asked through each member's status."""
        for name in members:
            url = f"{self._scheme}://{self._node(name).address}:2379/v3/maintenance/status"
            request = urllib.request.Request(url, data=b"{}", method="POST")
            try:
                with self._opener.open(request, timeout=2) as resp:
                    data = json.loads(resp.read())
            except (OSError, ValueError):
                continue
            if str(data.get("leader")) == str(data.get("header", {}).get("member_id")):
                return name
        return None
