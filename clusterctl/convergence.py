"""Whether a cluster's nodes still match their last converge, so that `up` can skip it.

Why: a converge of playbooks/site.yml that changes nothing still costs ~50 s on three nodes
(about 100 tasks, each a round trip to every node). A re-run of `up` on a healthy cluster
instead reads one digest per node (playbooks/digest.yml, one task) and converges only when
something differs:

* the inputs: a fingerprint of everything a converge is computed from — the playbooks,
  roles and plugins, the agent's sources, the inventory, the variables clusterctl passes and
  the cluster's certificates and secrets in the state directory;
* each node: its digest (plugins/modules/node_digest.py) of the files, directories and
  running units that the last converge's own task results named, plus the node's boot links
  and installed packages — so a file edited or removed by hand, a stopped service, a unit
  enabled or disabled, a package removed or upgraded all run the full converge, which
  repairs them.

The record is written only after a full converge succeeded, and forgotten before any other
playbook runs on the cluster (a failed or partial run never leaves a record that matches).
What the digest does not see — state outside the nodes' files and units, such as etcd's
users — `up --full` converges anyway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterctl.paths import PROJECT_ROOT
from clusterctl.state import StateDir, write_private

RECORD_NAME = "converged.json"
# What a converge is computed from, in the repository (the agent's zipapp is built from its
# sources at each converge).
INPUT_PATHS = (
    "ansible.cfg",
    "galaxy.yml",
    "meta",
    "playbooks",
    "plugins",
    "roles",
    "clusterctl/__init__.py",
    "clusterctl/agent",
)
# State-directory entries that are not inputs of a converge: its own records and logs, the
# sandbox's shared storage (written by the nodes), SSH's host keys (checked, not converged).
STATE_NOT_INPUTS = frozenset({"runner", "shared", "cluster.json", "known_hosts", RECORD_NAME})


def _files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
    elif root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                yield path


def input_fingerprint(state: StateDir, inventory: Path, extravars: Mapping[str, Any]) -> str:
    """SHA-256 over the repository's Ansible content and agent sources, the cluster's state
    files (certificates, secrets: hashed, never stored), the ``inventory`` Ansible runs
    against with the group_vars and host_vars beside it (an operator's own, outside the
    state directory, with the ssh provider) and ``extravars``."""
    digest = hashlib.sha256()

    def add(label: str, path: Path) -> None:
        digest.update(f"{label}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())

    for name in INPUT_PATHS:
        for path in _files(PROJECT_ROOT / name):
            add(str(path.relative_to(PROJECT_ROOT)), path)
    for path in (inventory, inventory.parent / "group_vars", inventory.parent / "host_vars"):
        for found in _files(path):
            add(f"inventory/{found.relative_to(inventory.parent)}", found)
    if state.path.is_dir():
        for entry in sorted(state.path.iterdir()):
            if entry.name not in STATE_NOT_INPUTS and not entry.name.endswith(".tmp"):
                for path in _files(entry):
                    add("state/" + str(path.relative_to(state.path)), path)
    digest.update(json.dumps(extravars, sort_keys=True, default=str).encode())
    return digest.hexdigest()


Digests = Mapping[str, Mapping[str, str]]  # host -> item (a path, "unit X", ...) -> hash


@dataclass(frozen=True)
class ConvergeRecord:
    """The last full converge: its inputs' fingerprint, and per host what it manages there
    and the digest items the node had right after it."""

    fingerprint: str
    managed: dict[str, dict[str, list[str]]]
    digests: dict[str, dict[str, str]]

    def drifted(self, digests: Digests) -> dict[str, list[str]]:
        """Per host that differs now, the items that differ ("answered nothing" for a host
        without a digest, "new node" for one the record does not know)."""
        drift: dict[str, list[str]] = {}
        for host in sorted(self.digests.keys() | digests.keys()):
            before, now = self.digests.get(host), digests.get(host)
            if before is None or now is None:
                drift[host] = ["new node" if before is None else "answered nothing"]
            elif before != now:
                drift[host] = sorted(k for k in before.keys() | now.keys()
                                     if before.get(k) != now.get(k))  # fmt: skip
        return drift


def load(state: StateDir) -> ConvergeRecord | None:
    try:
        data = json.loads((state.path / RECORD_NAME).read_text())
        digests = {str(h): {str(k): str(v) for k, v in items.items()}
                   for h, items in data["digests"].items()}  # fmt: skip
        return ConvergeRecord(str(data["fingerprint"]), dict(data["managed"]), digests)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(
    state: StateDir,
    fingerprint: str,
    managed: Mapping[str, Mapping[str, list[str]]],
    digests: Digests,
) -> None:
    """``managed``: per host, ``ManagedState.to_dict()`` (what digest.yml is given)."""
    data = {
        "fingerprint": fingerprint,
        "managed": {host: dict(paths_units) for host, paths_units in sorted(managed.items())},
        "digests": {host: dict(sorted(items.items())) for host, items in sorted(digests.items())},
    }
    write_private(state.path / RECORD_NAME, json.dumps(data, indent=2) + "\n")


def forget(state: StateDir) -> None:
    (state.path / RECORD_NAME).unlink(missing_ok=True)
