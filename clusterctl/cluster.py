"""The controller's library API: up, down and status of a cluster.

The CLI is a thin layer over these functions; so are the tests and benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clusterctl import convergence
from clusterctl.agent.config import ConfigError, group_from_dict, group_to_dict, validate_group
from clusterctl.agent.history import HistoryEntry, last_failover
from clusterctl.agent.tls import TlsFiles
from clusterctl.agentclient import AgentClient
from clusterctl.errors import ClusterctlError
from clusterctl.inventory import InventoryNode, reachable_nodes
from clusterctl.profiles import (
    AGENT_PROFILES,
    DEFAULT_PROFILE,
    FENCED_PROFILES,
    PROFILE_GROUPS,
    PROFILES,
)
from clusterctl.providers.base import Provider
from clusterctl.providers.network import source_addresses
from clusterctl.reporter import Reporter
from clusterctl.runner import PlaybookResult, run_playbook
from clusterctl.slurm import shell_for
from clusterctl.sshcheck import forget_host_keys, probe_all, wait_and_trust
from clusterctl.state import ClusterRecord, StateDir, read_token
from clusterctl.status import (
    BackendStatus,
    ClusterStatus,
    GroupStatus,
    NodeStatus,
    http_probe_all,
)
from clusterctl.trust import cluster_ca, ensure_trust

MIN_LEASE_TTL, MAX_LEASE_TTL = 1, 10  # seconds; etcd counts lease TTLs in whole seconds
DIGEST_PLAYBOOK = "digest.yml"  # one task per node: does it match its last converge?


@dataclass
class UpOptions:
    cluster: str = "demo"
    provider: str = "podman"
    nodes: int | None = None  # None: the cluster's own count (3 for a new one)
    subnet: str | None = None
    inventory: Path | None = None
    converge: bool = True
    profile: str | None = None  # None: the cluster's recorded profile, else "lb"
    lb_engine: str | None = None  # None: the recorded engine, else "nft"
    lease_ttl: int | None = None  # None: the recorded lease TTL, else 1 s
    check: bool = False  # Ansible check mode: report what a converge would change, change nothing
    diff: bool = False  # show the differences (of files, templates) a converge makes or would make
    fencing: bool = False  # sandbox: run the nodes' fence device (kept once set)
    groups_file: Path | None = None  # the operator's own resource groups (kept once set)
    full: bool = False  # converge even when every node matches its last converge


@dataclass
class UpResult:
    record: ClusterRecord
    inventory: Path
    playbook: PlaybookResult | None = None
    created: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # stopped nodes started again


def make_provider(state: StateDir, reporter: Reporter, options: UpOptions) -> Provider:
    if options.provider == "podman":
        from clusterctl.providers.podman import PodmanProvider

        if options.inventory is not None:
            raise ClusterctlError(
                "-i/--inventory is for the ssh provider", "add --provider ssh, or drop -i"
            )
        return PodmanProvider(
            state,
            reporter,
            nodes=options.nodes,
            subnet=options.subnet,
            profile=options.profile or DEFAULT_PROFILE,
        )
    if options.provider == "ssh":
        from clusterctl.providers.ssh import SshProvider

        return SshProvider(state, reporter, options.inventory, options.profile or DEFAULT_PROFILE)
    raise ClusterctlError(f"unknown provider {options.provider!r}", "use podman or ssh")


def provider_for_record(state: StateDir, reporter: Reporter, record: ClusterRecord) -> Provider:
    options = UpOptions(record.name, record.provider, len(record.nodes), profile=record.profile)
    if record.provider == "ssh":
        options.inventory = Path(record.source_inventory) if record.source_inventory else None
    return make_provider(state, reporter, options)


def up(options: UpOptions, reporter: Reporter) -> UpResult:
    """Create (or start) the nodes, wait for SSH, and converge them with playbooks/site.yml."""
    state = StateDir(options.cluster)
    if options.profile is not None and options.profile not in PROFILES:
        raise ClusterctlError(
            f"unknown profile {options.profile!r}", f"use one of: {', '.join(PROFILES)}"
        )
    if options.lease_ttl is not None and not MIN_LEASE_TTL <= options.lease_ttl <= MAX_LEASE_TTL:
        raise ClusterctlError(
            f"lease TTL {options.lease_ttl} s is out of range",
            f"use {MIN_LEASE_TTL}-{MAX_LEASE_TTL} whole seconds (1: fastest failover, "
            "2: steady under CPU saturation)",
        )
    provider = make_provider(state, reporter, options)  # checks its tools first (podman)
    existing = state.load() if state.exists() else None
    if options.check:
        _check_mode_possible(options, provider, existing)
    if existing is not None:
        if options.profile and options.profile != existing.profile:
            raise ClusterctlError(
                f"cluster {options.cluster!r} runs profile {existing.profile}",
                f"omit --profile, or `clusterctl down --cluster {options.cluster}` first",
            )
        provider.profile = existing.profile
    groups = None
    if options.groups_file is not None:  # checked before anything is made or changed
        fencing = options.fencing or bool(existing and existing.fencing)
        groups = load_groups(options.groups_file, options.provider, fencing)
    try:
        record, nodes = provider.ensure_nodes(existing)
        forget_host_keys(state.known_hosts, provider.new_host_addresses())
        reporter.progress(f"waiting for SSH on {len(nodes)} nodes")
        wait_and_trust(
            nodes, provider.key_for, state.known_hosts, provider.ssh_wait_s, reporter.progress
        )
    except ClusterctlError:
        if existing is None and options.provider == "ssh":
            state.remove()  # a first `up` on hosts that failed its checks leaves nothing behind
        raise
    # a sandbox of a profile on shared storage always has its fence device
    fencing = options.fencing or (record.provider == "podman" and record.profile in FENCED_PROFILES)
    if options.lb_engine or options.lease_ttl or fencing or groups is not None:
        # changing any re-converges the agents
        record.lb_engine = options.lb_engine or record.lb_engine
        record.lease_ttl = options.lease_ttl or record.lease_ttl
        record.fencing = fencing or record.fencing
        record.groups = record.groups if groups is None else groups
        state.save(record)
    pin_etcd_members(state, record)
    ensure_trust(state, record)
    if record.fencing:
        provider.ensure_fence_device(record)
    inventory = provider.inventory_path(record)
    result = UpResult(record=record, inventory=inventory, started=provider.started_nodes())
    if result.started:
        reporter.info(
            f"started {len(result.started)} stopped node(s): {', '.join(result.started)} "
            "(same addresses; their disks, etcd data and settings kept)"
        )
    if not options.converge:
        return result
    # Nodes started just now are still starting their services: converge (and wait for
    # their health checks) rather than compare them with their last converge.
    full = options.full or bool(result.started)
    result.playbook = converge(
        state, provider, record, reporter, nodes, check=options.check, diff=options.diff,
        full=full,
    )  # fmt: skip
    return result


def _check_mode_possible(
    options: UpOptions, provider: Provider, existing: ClusterRecord | None
) -> None:
    """A check changes nothing, so it needs a cluster that exists and runs, and compares the
    nodes with the cluster's recorded settings, not new ones."""
    cluster = options.cluster
    if options.profile or options.lb_engine or options.lease_ttl:
        raise ClusterctlError(
            "--check compares the nodes with the cluster's recorded settings",
            "drop --profile, --lb-engine and --lease-ttl, or run without --check to change them",
        )
    if existing is None:
        raise ClusterctlError(
            f"cluster {cluster!r} does not exist: there is nothing to check",
            f"create it with `clusterctl up --cluster {cluster}`",
        )
    stopped = [n for n, p in provider.power_states(existing).items() if p != "running"]
    if stopped:
        raise ClusterctlError(
            f"--check cannot start nodes, and {', '.join(stopped)} are not running",
            f"start them with `clusterctl up --cluster {cluster}` first",
        )


def load_groups(path: Path, provider: str, fencing: bool) -> list[dict]:
    """The operator's resource groups from a YAML or JSON list, checked by the agent's own
    rules before anything is converged."""
    hint = f'see README, "Your own resource groups"; fix {path}'
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ClusterctlError(f"cannot read {path}: {exc.strerror or exc}", hint) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ClusterctlError(f"{path} is not YAML or JSON: {first}", hint) from None
    if not isinstance(data, list) or not data:
        raise ClusterctlError(f"{path} must hold a list of groups", hint)
    groups = []
    for raw in data:
        try:
            group = group_from_dict(raw)
            validate_group(group)
        except ConfigError as exc:
            raise ClusterctlError(f"{path}: {exc}", hint) from None
        if group.name in PROFILE_GROUPS or group.name in {g["name"] for g in groups}:
            raise ClusterctlError(f"{path}: group name {group.name!r} is taken", hint)
        if group.needs_fencing and provider == "podman" and not fencing:
            raise ClusterctlError(
                f"{path}: group {group.name!r} needs fencing; this sandbox has no fence device",
                "add --fencing",
            )
        groups.append(group_to_dict(group))
    return groups


def profile_settings(record: ClusterRecord) -> dict:
    """The settings that mean something in the cluster's profile (None where they do not):
    the LB engine for lb, the agent's lease TTL for the profiles with an agent."""
    return {
        "lb_engine": record.lb_engine if record.profile == "lb" else None,
        "lease_ttl": record.lease_ttl if record.profile in AGENT_PROFILES else None,
    }


def playbook_vars(provider: Provider, record: ClusterRecord) -> dict:
    """Extra variables of every playbook run: the provider's plus the cluster's settings."""
    return {
        **provider.extravars(),
        "clusterctl_lb_engine": record.lb_engine,
        "clusterctl_lease_ttl": record.lease_ttl,
        "clusterctl_groups": record.groups,
        # the one place the member rule is computed for clusterctl's runs
        "clusterctl_etcd_members": etcd_members(record),
        # who the nodes' guards let in as the controller: under `become` the SSH session's
        # source (SSH_CLIENT) is gone from the environment, so it is computed here
        "clusterctl_controller_addresses": source_addresses(n.address for n in record.nodes),
    }


def run_cluster_playbook(
    name: str,
    state: StateDir,
    provider: Provider,
    record: ClusterRecord,
    reporter: Reporter,
    host_count: int,
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> PlaybookResult:
    """Run playbooks/<name> on the cluster's inventory with the cluster's variables (plus
    ``extra``). Any playbook but the digest's may change the nodes: the record of the last
    converge is forgotten first (clusterctl/convergence.py)."""
    if name != DIGEST_PLAYBOOK:
        convergence.forget(state)
    return run_playbook(
        name,
        inventory=provider.inventory_path(record),
        work_dir=state.runner_dir,
        reporter=reporter,
        host_count=host_count,
        extravars={**playbook_vars(provider, record), **(extra or {})},
        limit=limit,
        check=check,
        diff=diff,
    )


def _unchanged_since_converge(
    state: StateDir,
    provider: Provider,
    record: ClusterRecord,
    reporter: Reporter,
    nodes: list[InventoryNode],
    fingerprint: str,
) -> PlaybookResult | None:
    """The digest run, if every node matches its last converge and nothing that run was
    computed from changed; None if a converge is needed."""
    saved = convergence.load(state)
    if saved is None or saved.fingerprint != fingerprint:
        return None  # (the fingerprint covers the inventory: a node added or removed too)
    reporter.progress("comparing the nodes with their last converge")
    digests = run_cluster_playbook(
        DIGEST_PLAYBOOK, state, provider, record, reporter, len(nodes),
        extra={"clusterctl_managed": saved.managed},
    )  # fmt: skip
    drifted = saved.drifted(digests.digests)
    if drifted:
        what = "; ".join(f"{host} ({', '.join(items)})" for host, items in drifted.items())
        reporter.info(f"changed since the last converge: {what}; converging")
        return None
    reporter.info(
        "every node matches its last converge: nothing to change (`up --full` converges anyway)"
    )
    return digests


def converge(
    state: StateDir,
    provider: Provider,
    record: ClusterRecord,
    reporter: Reporter,
    nodes: list[InventoryNode],
    check: bool = False,
    diff: bool = False,
    full: bool = True,
) -> PlaybookResult:
    """Converge the nodes with playbooks/site.yml; unless ``full``, first compare them with
    their last converge and skip it when nothing differs (clusterctl/convergence.py)."""
    fingerprint = convergence.input_fingerprint(
        state, provider.inventory_path(record), playbook_vars(provider, record)
    )
    if not (full or check or needs_tls_upgrade(record) or not record.converged):
        unchanged = _unchanged_since_converge(state, provider, record, reporter, nodes, fingerprint)
        if unchanged is not None:
            return unchanged
    if needs_tls_upgrade(record) and not check:
        reporter.info(
            f"cluster {record.name} was built before etcd and the agents spoke TLS: upgrading "
            "it in place, one etcd member at a time"
        )
        run_cluster_playbook("upgrade_tls.yml", state, provider, record, reporter, len(nodes))
    outcome = run_cluster_playbook(
        "site.yml", state, provider, record, reporter, len(nodes), check=check, diff=diff
    )
    if not check:
        record.converged = True
        record.tls = record.profile in AGENT_PROFILES
        state.save(record)
        reporter.progress("recording what the converge left on each node")
        managed = {host: m.to_dict() for host, m in outcome.managed.items()}
        digests = run_cluster_playbook(
            DIGEST_PLAYBOOK, state, provider, record, reporter, len(nodes),
            extra={"clusterctl_managed": managed},
        )  # fmt: skip
        convergence.save(state, fingerprint, managed, digests.digests)
    return outcome


def needs_tls_upgrade(record: ClusterRecord) -> bool:
    """A cluster with etcd and agents that an earlier clusterctl converged over plain HTTP."""
    return record.converged and not record.tls and record.profile in AGENT_PROFILES


def down(cluster: str, reporter: Reporter, purge: bool = False) -> list[str]:
    """Remove a cluster's containers, network and state. Safe to run again."""
    state = StateDir(cluster)
    record = None
    if state.exists():
        try:
            record = state.load()
        except ClusterctlError as exc:
            reporter.warn(f"{exc}; removing what can be found by name")
    removed: list[str] = []
    provider_name = record.provider if record else "podman"
    if provider_name == "podman":
        from clusterctl.providers.podman import PodmanProvider
        from clusterctl.providers.podman_cli import require_podman

        try:
            require_podman()
        except ClusterctlError:
            if record is not None:
                raise
        else:
            podman_provider = PodmanProvider(state, reporter)
            removed += podman_provider.destroy(record)
            if purge:
                removed += podman_provider.purge_image()
    if state.path.exists():
        state.remove()
        removed.append(f"state {state.path}")
    return removed


def etcd_members(record: ClusterRecord) -> list[str]:
    """Nodes running an etcd member (recorded at creation; none without agents)."""
    if record.profile not in AGENT_PROFILES:
        return []
    return record.etcd_member_names()


def pin_etcd_members(state: StateDir, record: ClusterRecord) -> None:
    """Record which nodes run etcd, once: later node counts never change them."""
    if record.profile in AGENT_PROFILES and not record.etcd_members:
        record.etcd_members = record.etcd_member_names()
        state.save(record)


def agent_client(
    state: StateDir, record: ClusterRecord, node: str | None = None, timeout: float = 3.0
) -> AgentClient:
    """A client of the cluster's agents (etcd members first), or of ``node``'s alone."""
    if record.profile not in AGENT_PROFILES:
        raise ClusterctlError(
            f"cluster {record.name!r} runs profile {record.profile}, which has no failover agent",
            "create an HA cluster with `clusterctl up --profile ha`",
        )
    if not state.api_token.exists():
        raise ClusterctlError(
            f"no API token in {state.path}", f"run `clusterctl up --cluster {record.name}`"
        )
    token = read_token(state.api_token)
    # etcd members first: they are the likeliest to have quorum
    members = etcd_members(record)
    ordered = sorted(record.nodes, key=lambda n: n.name not in members)
    if node is not None:
        ordered = [n for n in ordered if n.name == node]
    ca = cluster_ca(state)
    tls = None
    if ca.ca_cert.exists():
        tls = TlsFiles(str(ca.ca_cert), *(str(p) for p in ca.controller_paths()))
    return AgentClient([n.address for n in ordered], token, timeout=timeout, tls=tls)


def _holders_notes(
    state: StateDir, record: ClusterRecord, agent_view: dict
) -> dict[str, dict[str, str]]:
    """Each group's resources in their own words (a guest's qemu state), from the agent of
    the node holding it: only it knows. Best effort: a holder that does not answer has none,
    and one the agents no longer see online is not asked (its agent answers nothing, and
    `status` would wait for it)."""
    notes: dict[str, dict[str, str]] = {}
    holders = {g["node"] for g in agent_view.get("groups", []) if g.get("node")}
    online = {m["name"] for m in agent_view.get("members", []) if m.get("online")}
    for node in sorted(holders & online & {n.name for n in record.nodes}):
        try:
            # a live agent answers in milliseconds
            health = agent_client(state, record, node, timeout=1.0).request("GET", "/v1/health")
        except ClusterctlError:
            continue
        for group, resources in (health.get("notes") or {}).items():
            notes[group] = {str(k): str(v) for k, v in resources.items()}
    return notes


def status(cluster: str) -> ClusterStatus:
    """Probe every node (SSH handshake + key, web server) and ask the agents for the rest."""
    state = StateDir(cluster)
    record = state.load()
    from clusterctl.reporter import ListReporter

    provider = provider_for_record(state, ListReporter(), record)
    power = provider.power_states(record)
    in_etcd = set(etcd_members(record))
    if power and all(p != "running" for p in power.values()):
        # e.g. after the host restarted: nothing to ask, and one clear thing to do
        return ClusterStatus(
            cluster=cluster,
            provider=record.provider,
            profile=record.profile,
            **profile_settings(record),
            quorum=False,
            nodes=[
                NodeStatus(
                    n.name,
                    n.address,
                    online=False,
                    ssh=False,
                    web=False,
                    etcd=n.name in in_etcd,
                    error=power[n.name],
                    power=power[n.name],
                )
                for n in record.nodes
            ],
            state="stopped",
            hint=f"start it with `clusterctl up --cluster {cluster}` (same nodes, addresses "
            "and data)",
        )
    nodes = reachable_nodes(record, fallback=True)  # a moved inventory: the recorded addresses
    agent_view: dict = {}
    backend_view: dict = {}
    failovers: dict[str, HistoryEntry] = {}
    agent_error = ""
    if record.profile in AGENT_PROFILES:
        try:
            client = agent_client(state, record)
            agent_view = client.status()
            if record.profile == "lb":
                backend_view = client.backends()
            entries = _entries(client.history(limit=STATUS_HISTORY))
            for g in agent_view.get("groups", []):
                if (last := last_failover(entries, g["name"])) is not None:
                    failovers[g["name"]] = last
        except ClusterctlError as exc:
            agent_error = exc.message
        notes = _holders_notes(state, record, agent_view)
    ssh = probe_all(nodes, provider.key_for, timeout=2.0)
    slurm = None
    if record.profile == "hpc":  # no web server: Slurm's own view instead
        web = [(False, "")] * len(nodes)
        slurm = shell_for(state, record, provider).status()
    else:
        web = http_probe_all([n.address for n in nodes])
    members = {m["name"]: m for m in agent_view.get("members", [])}
    node_status = []
    for node, (web_ok, reply) in zip(nodes, web, strict=True):
        probe = ssh[node.name]
        if record.profile in AGENT_PROFILES:
            online = bool(members.get(node.name, {}).get("online"))
        else:
            online = probe.authenticated
        node_status.append(
            NodeStatus(
                name=node.name,
                address=node.address,
                online=online,
                ssh=probe.authenticated,
                web=web_ok,
                web_reply=reply if web_ok else "",
                etcd=node.name in in_etcd,
                standby=bool(members.get(node.name, {}).get("standby")),
                error="" if probe.authenticated else probe.error,
                power=power.get(node.name, ""),
            )
        )
    groups = [
        GroupStatus(
            name=g["name"],
            vip=g.get("vip", ""),
            node=g.get("node") or "",
            state=g.get("state", ""),
            failcounts=dict(g.get("failcounts") or {}),
            bans=list(g.get("bans") or []),
            last_failover=failovers.get(g["name"]),
            fencing=g.get("fencing"),
            notes=notes.get(g["name"], {}),
        )
        for g in agent_view.get("groups", [])
    ]
    backends = [
        BackendStatus(
            node=b["node"],
            address=b.get("address", ""),
            state=b.get("state", ""),
            weight=int(b.get("weight", 0)),
            health=b.get("health", "unknown"),
            active_connections=b.get("active_connections"),
        )
        for b in backend_view.get("backends", [])
    ]
    return ClusterStatus(
        cluster=cluster,
        provider=record.provider,
        profile=record.profile,
        **profile_settings(record),
        quorum=bool(agent_view.get("quorum")),
        nodes=node_status,
        groups=groups,
        backends=backends,
        slurm=slurm,
        agent_error=agent_error,
    )


STATUS_HISTORY = 500  # entries `status` reads to find each group's last failover


def _entries(data: dict) -> list[HistoryEntry]:
    return [e for raw in data.get("entries", []) if (e := HistoryEntry.from_dict(raw)) is not None]


def history(
    cluster: str, group: str | None = None, since: float | None = None, limit: int = 1000
) -> list[HistoryEntry]:
    """The cluster's transitions (every node's), oldest first, as the agents recorded them."""
    state = StateDir(cluster)
    record = state.load()
    if record.profile not in AGENT_PROFILES:
        raise ClusterctlError(
            f"cluster {cluster} runs profile {record.profile}: no agents, so no history",
            "the ha and lb profiles keep a failover history",
        )
    return _entries(agent_client(state, record).history(group, since, limit))


def _group_names(client: AgentClient) -> dict:
    return {g["name"]: g for g in client.status().get("groups", [])}


def _why_move_failed(client: AgentClient, group: str, since: float) -> str:
    """The reason of the group's last ``move-failed`` entry since ``since`` (epoch seconds)."""
    entries = _entries(client.history(group=group, since=since - 1.0, limit=20))
    failed = [e for e in entries if e.event == "move-failed"]
    return failed[-1].reason if failed else "the move was withdrawn"


def failover(
    cluster: str,
    group: str,
    to: str | None,
    reporter: Reporter,
    timeout: float = 30.0,
) -> dict:
    """Move a group (to a node, or away from its holder) and wait until it runs there."""
    state = StateDir(cluster)
    record = state.load()
    if to is not None:
        record.require_node(to)
    client = agent_client(state, record)
    groups = _group_names(client)
    if group not in groups:
        raise ClusterctlError(
            f"unknown group {group!r}", f"groups are: {', '.join(sorted(groups)) or 'none'}"
        )
    before = groups[group].get("node") or None
    if to is not None and before == to and groups[group].get("state") == "started":
        return {"group": group, "from": before, "to": to, "changed": False, "seconds": 0.0}
    started, asked_at = time.monotonic(), time.time()
    client.move(group, to)
    reporter.progress(f"moving {group} from {before or 'nowhere'} to {to or 'another node'}")
    deadline = started + timeout
    current: dict = {}
    while time.monotonic() < deadline:
        current = _group_names(client).get(group, {})
        node = current.get("node")
        if (
            current.get("state") == "started"
            and node
            and (node == to or (to is None and node != before))
        ):
            return {
                "group": group,
                "from": before,
                "to": node,
                "changed": True,
                "seconds": round(time.monotonic() - started, 3),
            }
        if current.get("move") is None and current.get("state") == "started" and node == before:
            # the move was given up (a live migration failed, or it was withdrawn): the
            # group runs on where it was, and the history says why
            raise ClusterctlError(
                f"{group} stays on {before}: {_why_move_failed(client, group, asked_at)}",
                f"see `clusterctl history --cluster {cluster} --group {group}`",
            )
        time.sleep(0.05)
    where = f"{current.get('state', 'unknown')} on {current.get('node') or 'no node'}"
    raise ClusterctlError(
        f"{group} did not start on {to or 'another node'} within {timeout:.0f} s (now {where})",
        f"see `clusterctl status --cluster {cluster}` and the agent's journal on the target",
    )


def cluster_with_node(cluster: str, node: str) -> tuple[StateDir, ClusterRecord]:
    """The cluster's state and record, once ``node`` is known to be one of its nodes."""
    state = StateDir(cluster)
    record = state.load()
    record.require_node(node)
    return state, record


def set_standby(cluster: str, node: str, on: bool) -> dict:
    state, record = cluster_with_node(cluster, node)
    return agent_client(state, record).standby(node, on)


def confirm_fenced(cluster: str, node: str) -> dict:
    """An operator's word that ``node`` is off (`clusterctl fence NODE --confirm`)."""
    state, record = cluster_with_node(cluster, node)
    return agent_client(state, record).confirm_fenced(node)


def wait_not_holding(cluster: str, node: str, timeout: float = 30.0) -> None:
    """Wait until `node` holds no group (after standby, its groups move away)."""
    state = StateDir(cluster)
    client = agent_client(state, state.load())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = client.status().get("groups", [])
        if all(g.get("node") != node or g.get("state") != "started" for g in groups):
            return
        time.sleep(0.1)
    raise ClusterctlError(
        f"{node} still holds a group after {timeout:.0f} s in standby",
        "see `clusterctl status`; another node must be eligible to take it",
    )


def cleanup(cluster: str, group: str) -> dict:
    state = StateDir(cluster)
    client = agent_client(state, state.load())
    if group not in _group_names(client):
        raise ClusterctlError(f"unknown group {group!r}", "see `clusterctl status`")
    return client.cleanup(group)
