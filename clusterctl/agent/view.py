"""A parsed, immutable view of the cluster's keys, read once per loop iteration.

Parsing is tolerant: a malformed value is treated as absent rather than crashing the loop,
because the loop must keep renewing (and, if needed, fencing) whatever else is in etcd.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from clusterctl.agent.config import ConfigError, GroupSpec, group_from_dict, validate_group
from clusterctl.agent.keys import Keys
from clusterctl.agent.lb.model import Backend


@dataclass(frozen=True)
class Member:
    """A live member: its ``members/<node>`` key exists, so its lease is alive. ``standby``:
    its member value says so, or a ``standby/<node>`` key exists."""

    node: str
    address: str = ""
    standby: bool = False


@dataclass(frozen=True)
class Move:
    """A planned move of a group to ``target`` (the ``move`` key; ``raw`` is its text, for
    compare-and-delete)."""

    target: str
    raw: str = ""

    def to_json(self) -> str:
        return json.dumps({"target": self.target})


@dataclass(frozen=True)
class GroupView:
    name: str
    spec: GroupSpec
    leader: str | None = None
    failcounts: dict[str, int] = field(default_factory=dict)
    move: Move | None = None
    prestarted_by: str | None = None  # node that pre-started the prestart_safe resources
    owner: str | None = None  # fencing groups: the node whose resources may be running


@dataclass(frozen=True)
class ClusterView:
    members: dict[str, Member]
    groups: dict[str, GroupView]
    standby: frozenset[str] = frozenset()  # nodes with a ``standby/<node>`` key
    backends: dict[str, Backend] = field(default_factory=dict)  # ``backends/<node>``


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_member(node: str, text: str) -> Member:
    data = _json(text)
    if not isinstance(data, dict):
        return Member(node)
    return Member(node, str(data.get("address", "")), bool(data.get("standby", False)))


def parse_move(text: str | None) -> Move | None:
    data = _json(text)
    if not isinstance(data, dict) or not isinstance(data.get("target"), str):
        return None
    return Move(data["target"], text or "")


def placement_spec(local: GroupSpec, text: str | None) -> GroupSpec:
    """The group spec to place by: the cluster-wide ``spec`` key's placement rules (bans,
    preferred nodes, migration threshold — edited by the CLI) over the local resources (which
    this node knows how to run). Falls back to the local spec if the key is absent or bad."""
    data = _json(text)
    if not isinstance(data, dict):
        return local
    try:
        remote = group_from_dict({**data, "name": local.name, "resources": []})
        merged = GroupSpec(
            name=local.name,
            resources=local.resources,
            migration_threshold=remote.migration_threshold,
            bans=tuple(str(b) for b in remote.bans),
            preferred=tuple(str(p) for p in remote.preferred),
            monitor_interval=local.monitor_interval,
            restart_grace=local.restart_grace,
            fencing=local.fencing,
        )
        validate_group(merged)
    except (ConfigError, TypeError, ValueError):
        return local
    return merged


# The last view parsed from an immutable mapping (a watched copy's state): every agent of a
# process that reads the same copy, and every step until it changes, gets the parsed view
# instead of parsing it again (2.6 ms for 500 members: `bench scale` runs hundreds of agents
# per process, woken together by each change). Views are immutable; replaced, never changed.
_last_parsed: tuple[Mapping[str, str], Keys, tuple[GroupSpec, ...], ClusterView] | None = None


def parse_view(
    keys: Keys, kv: Mapping[str, str], local_groups: tuple[GroupSpec, ...]
) -> ClusterView:
    """Build the view from everything under ``keys.root`` (one ``get_prefix``)."""
    global _last_parsed
    last = _last_parsed
    if last is not None and last[0] is kv and last[1] == keys and last[2] == local_groups:
        return last[3]
    view = _parse_view(keys, kv, local_groups)
    if isinstance(kv, MappingProxyType):  # nobody can change it: safe to keep
        _last_parsed = (kv, keys, local_groups, view)
    return view


def _parse_view(
    keys: Keys, kv: Mapping[str, str], local_groups: tuple[GroupSpec, ...]
) -> ClusterView:
    sprefix = keys.standby_prefix()
    standby = frozenset(k[len(sprefix) :] for k in kv if k.startswith(sprefix))
    members: dict[str, Member] = {}
    mprefix = keys.members_prefix()
    for key, value in kv.items():
        if key.startswith(mprefix):
            node = key[len(mprefix) :]
            member = parse_member(node, value)
            if node in standby and not member.standby:
                member = Member(node, member.address, True)
            members[node] = member
    groups: dict[str, GroupView] = {}
    for local in local_groups:
        fprefix = keys.failcount_prefix(local.name)
        failcounts: dict[str, int] = {}
        for key, value in kv.items():
            if key.startswith(fprefix):
                try:
                    failcounts[key[len(fprefix) :]] = int(value)
                except ValueError:
                    continue
        groups[local.name] = GroupView(
            name=local.name,
            spec=placement_spec(local, kv.get(keys.spec(local.name))),
            leader=kv.get(keys.leader(local.name)) or None,
            failcounts=failcounts,
            move=parse_move(kv.get(keys.move(local.name))),
            prestarted_by=kv.get(keys.prestarted(local.name)) or None,
            owner=kv.get(keys.owner(local.name)) or None,
        )
    return ClusterView(members, groups, standby, parse_backends(keys, kv))


def parse_backends(keys: Keys, kv: dict[str, str]) -> dict[str, Backend]:
    """Every valid ``backends/<node>`` value; a malformed one is skipped (and so gets no
    traffic) rather than stopping the loop."""
    prefix = keys.backends_prefix()
    backends: dict[str, Backend] = {}
    for key, value in kv.items():
        if key.startswith(prefix):
            node = key[len(prefix) :]
            try:
                backends[node] = Backend.from_json(node, value).validate()
            except (ConfigError, ValueError, TypeError):
                continue
    return backends


def published_groups(keys: Keys, kv: dict[str, str]) -> tuple[GroupSpec, ...]:
    """Every group whose ``groups/<g>/spec`` key holds a valid spec, sorted by name: the
    cluster's groups as any node sees them (for the API), not only this node's."""
    gprefix = keys.groups_prefix()
    specs = []
    for key in sorted(kv):
        if not key.startswith(gprefix) or not key.endswith("/spec"):
            continue
        name = key[len(gprefix) : -len("/spec")]
        if "/" in name:
            continue
        data = _json(kv[key])
        if not isinstance(data, dict):
            continue
        try:
            spec = group_from_dict({**data, "name": name})
            validate_group(spec)
        except (ConfigError, TypeError, ValueError):
            continue
        specs.append(spec)
    return tuple(specs)
