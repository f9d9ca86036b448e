#!/usr/bin/python
# Copyright: clusterctl developers
# Apache License 2.0 (see galaxy.yml)
# ruff: noqa: E402  (imports follow DOCUMENTATION/EXAMPLES/RETURN, as in Ansible modules)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cluster_failover
short_description: Move, ban, unban, clear or clean up a clusterctl resource group
description:
  - Drives the failover agent of a clusterctl cluster through its REST API
    (C(docs/agent-api.md)), the way C(pcs resource move/ban/clear/cleanup) drives Pacemaker.
  - Reads the cluster status first and only calls a write endpoint when the group is not
    already in the requested state.
  - Any node answers for the whole cluster, so O(api_url) lists several endpoints which are
    tried in order.
version_added: "0.1.0"
extends_documentation_fragment:
  - clusterctl.cluster.agent_api
author:
  - clusterctl developers
options:
  group:
    description: Name of the resource group, for example C(web).
    type: str
    required: true
  state:
    description:
      - V(moved) with O(node) makes the group end on O(node) (nothing is done when it already
        runs there or a move there is pending); without O(node) it moves the group away from
        its current holder to any other eligible node (this is never a no-op when the group has
        a holder).
      - V(banned) forbids O(node) to run the group (banning the holder moves the group away).
      - V(unbanned) removes the ban of O(node).
      - V(cleared) removes all bans of the group and its pending move.
      - V(cleaned) resets the group's fail counts.
    type: str
    choices: [moved, banned, unbanned, cleared, cleaned]
    default: moved
  node:
    description:
      - Cluster member (inventory name) the group is moved to, or banned from or unbanned on.
      - Required with O(state=banned) and O(state=unbanned).
    type: str
  wait:
    description:
      - With O(state=moved) (and O(state=banned) of the current holder), poll the status until
        the group is C(started) on its new holder.
    type: bool
    default: true
  timeout:
    description: Seconds to wait with O(wait=true) before failing.
    type: float
    default: 30
attributes:
  check_mode:
    support: full
    description: Reads the status and reports what would change; no write endpoint is called.
  diff_mode:
    support: full
    description: Shows the group's holder, bans, pending move and fail counts before and after.
notes:
  - Runs on the controller or any host that reaches the API (typically C(delegate_to)
    localhost); it needs only Python's standard library.
  - A move is carried out by the agents on their next loop iteration, so without O(wait) the
    returned RV(holder) may still be the old holder.
seealso:
  - module: clusterctl.cluster.cluster_info
"""

EXAMPLES = r"""
- name: Move the web group to node2 and wait until it runs there
  clusterctl.cluster.cluster_failover:
    api_url: "{{ groups['cluster'] | map('extract', hostvars, 'ansible_host')
                 | map('regex_replace', '^', 'http://') | map('regex_replace', '$', ':7480')
                 | list }}"
    api_token_file: /var/lib/clusterctl/demo/api-token
    group: web
    node: node2

- name: Move web away from its current holder, do not wait
  clusterctl.cluster.cluster_failover:
    api_url: [http://10.0.0.11:7480, http://10.0.0.12:7480]
    api_token: "{{ clusterctl_api_token }}"
    group: web
    wait: false

- name: Keep web off node3
  clusterctl.cluster.cluster_failover:
    api_url: [http://10.0.0.11:7480]
    api_token_file: /var/lib/clusterctl/demo/api-token
    group: web
    state: banned
    node: node3

- name: Remove every ban and pending move, then reset fail counts
  clusterctl.cluster.cluster_failover:
    api_url: [http://10.0.0.11:7480]
    api_token_file: /var/lib/clusterctl/demo/api-token
    group: web
    state: "{{ item }}"
  loop: [cleared, cleaned]
"""

RETURN = r"""
group:
  description: Name of the group.
  returned: always
  type: str
  sample: web
holder_before:
  description: Node running the group before the module ran (null when it was stopped).
  returned: success
  type: str
  sample: node1
holder:
  description:
    - Node running the group at the end (null when stopped).
    - In check mode, the predicted holder (null when the target is any eligible node).
  returned: success
  type: str
  sample: node2
bans:
  description: Nodes banned from the group at the end (predicted in check mode).
  returned: success
  type: list
  elements: str
  sample: [node3]
group_state:
  description: The group's C(state) at the end, C(started), C(stopped) or C(moving).
  returned: success
  type: str
  sample: started
sentence:
  description: The API's sentence about the change it made (empty when nothing was changed).
  returned: success
  type: str
  sample: moving web from node1 to node2
diff:
  description: With C(--diff), the group's holder, bans, pending move and fail counts.
  returned: when diff mode is on
  type: dict
  sample: {"before": {"holder": "node1", "bans": [], "move": null, "failcounts": {}},
           "after": {"holder": "node2", "bans": [], "move": null, "failcounts": {}}}
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterctl.cluster.plugins.module_utils.agent_api import (
    AgentApiError,
    AgentAuthError,
    AgentUnavailableError,
    find_group,
    find_member,
)
from ansible_collections.clusterctl.cluster.plugins.module_utils.agent_options import (
    AGENT_MUTUALLY_EXCLUSIVE,
    AGENT_REQUIRED_ONE_OF,
    agent_argument_spec,
    agent_from_module,
)

POLL_INTERVAL = 0.2


def snapshot(group):
    """The part of a status group the module changes (and shows in diffs)."""
    return {
        "holder": group.get("node"),
        "state": group.get("state"),
        "bans": sorted(group.get("bans") or []),
        "move": group.get("move"),
        "failcounts": dict(group.get("failcounts") or {}),
    }


class Failover:
    def __init__(self, module, api):
        self.module = module
        self.api = api
        self.p = module.params
        self.name = self.p["group"]

    def fail(self, msg, **extra):
        self.module.fail_json(msg=msg, group=self.name, **extra)

    def read(self):
        """(status, group) now; fails when the group does not exist."""
        status = self.api.status()
        group = find_group(status, self.name)
        if group is None:
            known = ", ".join(g.get("name", "?") for g in status.get("groups") or []) or "none"
            self.fail(f"group {self.name!r} not found in cluster (groups: {known})")
        return status, group

    def check_node(self, status, node):
        if find_member(status, node) is None:
            known = ", ".join(m.get("name", "?") for m in status.get("members") or []) or "none"
            self.fail(f"node {node!r} is not a member of the cluster (members: {known})")

    # Each plan_* returns (write, predicted_after, wait_until) where write is None when the
    # group is already as requested, and wait_until a predicate on a status group (or None).

    def plan_moved(self, status, before):
        node = self.p["node"]
        holder = before["holder"]
        if node is not None:
            self.check_node(status, node)
            started_on_node = lambda g: g.get("state") == "started" and g.get("node") == node  # noqa: E731
            if holder == node and before["move"] in (None, node):
                return None, before, started_on_node
            if before["move"] == node:  # already asked for: only wait
                return None, dict(before, holder=node, move=None), started_on_node
            if self.module.check_mode:
                member = find_member(status, node)
                if node in before["bans"]:
                    self.fail(f"cannot move {self.name} to {node}: {node} is banned from it")
                if member.get("standby"):
                    self.fail(f"cannot move {self.name} to {node}: {node} is in standby")
            after = dict(before, holder=node, move=None, state="started")
            return (lambda: self.api.move(self.name, node)), after, started_on_node
        # No node: move away from the current holder, to any other eligible node.
        if holder is None:
            self.fail(f"group {self.name} has no holder to move away from; give node")
        if before["move"] is not None:  # a move is already pending: only wait
            return None, dict(before, holder=None, move=None), self._away_from(holder)
        after = dict(before, holder=None, move=None)
        return (lambda: self.api.move(self.name, None)), after, self._away_from(holder)

    @staticmethod
    def _away_from(holder):
        return lambda g: g.get("state") == "started" and g.get("node") not in (None, holder)

    def plan_banned(self, status, before):
        node = self.p["node"]
        self.check_node(status, node)
        if node in before["bans"]:
            return None, before, None
        after = dict(before, bans=sorted(before["bans"] + [node]))
        wait_until = None
        if before["holder"] == node:
            after.update(holder=None)
            wait_until = self._away_from(node)
        return (lambda: self.api.ban(self.name, node)), after, wait_until

    def plan_unbanned(self, status, before):
        node = self.p["node"]
        self.check_node(status, node)
        if node not in before["bans"]:
            return None, before, None
        after = dict(before, bans=[b for b in before["bans"] if b != node])
        return (lambda: self.api.unban(self.name, node)), after, None

    def plan_cleared(self, status, before):
        if not before["bans"] and before["move"] is None:
            return None, before, None
        after = dict(before, bans=[], move=None)
        return (lambda: self.api.clear(self.name)), after, None

    def plan_cleaned(self, status, before):
        if not any(before["failcounts"].values()):
            return None, before, None
        after = dict(before, failcounts={n: 0 for n in before["failcounts"]})
        return (lambda: self.api.cleanup(self.name)), after, None

    def wait_for(self, predicate, what):
        deadline = time.monotonic() + self.p["timeout"]
        last_error = None
        group = None
        while True:
            try:
                _, group = self.read()
                last_error = None
                if predicate(group):
                    return group
            except AgentUnavailableError as exc:  # keep polling through a transient outage
                last_error = str(exc)
            if time.monotonic() >= deadline:
                seen = (
                    f"last state={group.get('state')} holder={group.get('node')}"
                    if group
                    else "no status read"
                )
                if last_error:
                    seen += f"; last error: {last_error}"
                self.fail(
                    f"group {self.name} was not {what} within {self.p['timeout']:g} s ({seen})",
                    holder=(group or {}).get("node"),
                )
            time.sleep(POLL_INTERVAL)

    def run(self):
        state = self.p["state"]
        status, group = self.read()
        before = snapshot(group)
        write, predicted, wait_until = getattr(self, "plan_" + state)(status, before)
        changed = write is not None
        sentence = ""
        final = before
        if self.module.check_mode:
            final = predicted
        else:
            if write is not None:
                answer = write() or {}
                sentence = str(answer.get("sentence", ""))
            if self.p["wait"] and wait_until is not None:
                node = self.p["node"]
                what = f"started on {node}" if state == "moved" and node else "started elsewhere"
                final = snapshot(self.wait_for(wait_until, what))
            elif write is not None:
                _, group = self.read()
                final = snapshot(group)
        result = dict(
            changed=changed,
            group=self.name,
            holder_before=before["holder"],
            holder=final["holder"],
            bans=final["bans"],
            group_state=final["state"],
            sentence=sentence,
        )
        if self.module._diff:
            result["diff"] = {
                "before": _diff_view(before),
                "after": _diff_view(final),
            }
        self.module.exit_json(**result)


def _diff_view(snap):
    return {k: snap[k] for k in ("holder", "bans", "move", "failcounts")}


def main():
    argument_spec = agent_argument_spec()
    argument_spec.update(
        group=dict(type="str", required=True),
        state=dict(
            type="str",
            default="moved",
            choices=["moved", "banned", "unbanned", "cleared", "cleaned"],
        ),
        node=dict(type="str"),
        wait=dict(type="bool", default=True),
        timeout=dict(type="float", default=30.0),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=AGENT_MUTUALLY_EXCLUSIVE,
        required_one_of=AGENT_REQUIRED_ONE_OF,
        required_if=[("state", "banned", ["node"]), ("state", "unbanned", ["node"])],
        supports_check_mode=True,
    )
    if module.params["timeout"] <= 0:
        module.fail_json(msg="timeout must be greater than 0")
    api = agent_from_module(module)
    try:
        Failover(module, api).run()
    except AgentAuthError as exc:
        module.fail_json(
            msg=f"agent API refused the token ({exc.error}); check api_token/api_token_file",
            group=module.params["group"],
            status=exc.status,
        )
    except AgentApiError as exc:
        extra = {} if exc.status is None else {"status": exc.status}
        module.fail_json(msg=str(exc), group=module.params["group"], **extra)


if __name__ == "__main__":
    main()
