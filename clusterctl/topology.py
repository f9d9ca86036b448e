"""Which nodes run what: the one place the etcd-member rule is written for Python.

The roles get the result as ``clusterctl_etcd_members`` (cluster.playbook_vars); their own
fallback, for plain ansible-playbook runs, is the same rule in Jinja (roles/etcd/defaults).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def etcd_member_count(node_count: int) -> int:
    """3 members, or 5 from 5 nodes on: a majority survives one (or two) failures, and more
    members would only slow every write."""
    return 5 if node_count >= 5 else 3


def etcd_member_nodes(nodes: Sequence[T]) -> list[T]:
    """The nodes that run an etcd member: the first ones, in inventory order."""
    return list(nodes[: etcd_member_count(len(nodes))])
