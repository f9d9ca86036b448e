"""The etcd key layout (the safety rule they serve: ``agent/member.py``, ``agent/config.py``).

Every key lives under ``/clusterctl/<cluster>/``. Keeping the layout in one module means the
controller, the API and the tests agree on it by construction.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Builds the keys of one cluster."""

    cluster: str

    @property
    def root(self) -> str:
        return f"/clusterctl/{self.cluster}/"

    @property
    def state_end(self) -> str:
        """End (exclusive) of the cluster's state: the keys in [root, state_end) are what the
        loop and the API read every time; the history sorts after them (``~``)."""
        return f"{self.root}~"

    def history_prefix(self) -> str:
        return f"{self.root}~history/"

    def history_end(self) -> str:
        return f"{self.root}~history0"  # "0" follows "/": the first key after the history

    def history_since(self, at: float) -> str:
        """The first possible history key at or after ``at`` (epoch seconds)."""
        return f"{self.history_prefix()}{max(0, int(at * 1_000_000)):016d}"

    def history(self, at: float, node: str, seq: int) -> str:
        """``~history/<µs since the epoch>-<node>-<n>``: one transition (agent/history.py);
        bound to a lease of the retention time, so it expires by itself."""
        return f"{self.history_since(at)}-{node}-{seq}"

    def members_prefix(self) -> str:
        return f"{self.root}members/"

    def member(self, node: str) -> str:
        """``members/<node>``: JSON {address, health, version, standby}; bound to its lease."""
        return f"{self.members_prefix()}{node}"

    def standby_prefix(self) -> str:
        return f"{self.root}standby/"

    def standby(self, node: str) -> str:
        """``standby/<node>``: present while the node is in standby (it releases its groups and
        acquires none); persistent, written and deleted by the API (``admin.set_standby``)."""
        return f"{self.standby_prefix()}{node}"

    def groups_prefix(self) -> str:
        return f"{self.root}groups/"

    def group_prefix(self, group: str) -> str:
        return f"{self.groups_prefix()}{group}/"

    def leader(self, group: str) -> str:
        """``groups/<g>/leader``: the holder's node name; bound to the holder's member lease."""
        return f"{self.group_prefix(group)}leader"

    def spec(self, group: str) -> str:
        """``groups/<g>/spec``: the group spec as JSON; persistent."""
        return f"{self.group_prefix(group)}spec"

    def failcount_prefix(self, group: str) -> str:
        return f"{self.group_prefix(group)}failcount/"

    def failcount(self, group: str, node: str) -> str:
        """``groups/<g>/failcount/<node>``: an integer as text; persistent until cleared."""
        return f"{self.failcount_prefix(group)}{node}"

    def move(self, group: str) -> str:
        """``groups/<g>/move``: JSON {"target": node}; a planned move in progress.

        Whoever requests a move should bind this key to a lease of its own (e.g. 30 s) so that
        a move to a target that never comes is forgotten; see ``admin.request_move``.
        """
        return f"{self.group_prefix(group)}move"

    def prestarted(self, group: str) -> str:
        """``groups/<g>/prestarted``: the move target that has pre-started the group's
        prestart_safe resources; bound to that target's member lease, so it vanishes with it."""
        return f"{self.group_prefix(group)}prestarted"

    def owner(self, group: str) -> str:
        """``groups/<g>/owner``: for a group with ``fencing: required``, the node whose
        resources may be running — written before they start, deleted only once they stopped
        (by that node, or by an operator's ``fence --confirm``). Persistent, bound to no lease:
        a holder that vanishes leaves it behind, and the next holder must fence that node."""
        return f"{self.group_prefix(group)}owner"

    def fencing(self, group: str) -> str:
        """``groups/<g>/fencing``: JSON {target, since, error} while the holder of a fencing
        group fences the previous owner before starting it; bound to the holder's lease."""
        return f"{self.group_prefix(group)}fencing"

    def fences_prefix(self) -> str:
        return f"{self.root}fence/"

    def fence(self, node: str) -> str:
        """``fence/<node>``: JSON {by, at, result, detail}: the last fence of that node."""
        return f"{self.fences_prefix()}{node}"

    def backends_prefix(self) -> str:
        return f"{self.root}backends/"

    def backend(self, node: str) -> str:
        """``backends/<node>``: weight and state of an LB backend; persistent."""
        return f"{self.root}backends/{node}"
