#!/usr/bin/python
# Copyright: clusterctl developers
# Apache License 2.0 (see galaxy.yml)
# ruff: noqa: E402  (imports follow DOCUMENTATION/EXAMPLES/RETURN, as in Ansible modules)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cluster_backend
short_description: Set the weight and state of a clusterctl load balancer backend
description:
  - Enables, drains, disables or removes a backend of the load balancer of a clusterctl
    cluster, and sets its weight, through the agent REST API (C(docs/agent-api.md),
    section C(Backends)).
  - Reads the backends first and only calls a write endpoint for what differs from the
    requested state.
  - Any node answers for the whole cluster, so O(api_url) lists several endpoints which are
    tried in order.
version_added: "0.2.0"
extends_documentation_fragment:
  - clusterctl.cluster.agent_api
author:
  - clusterctl developers
options:
  node:
    description:
      - Name of the backend, that is the cluster node it runs on, for example C(node2).
      - With O(state=present), O(state=drained) and O(state=disabled) it must already be a
        registered backend (nodes register themselves); the module fails otherwise.
    type: str
    required: true
  state:
    description:
      - V(present) puts the backend in rotation (backend state C(active)).
      - V(drained) sets backend state C(draining) (no new connections, existing ones go on);
        with O(wait=true) the module then waits until the backend has no active connection.
      - V(disabled) takes the backend out of rotation (backend state C(disabled)).
      - V(absent) removes the backend's registration; nothing is done when it has none.
    type: str
    choices: [present, drained, disabled, absent]
    default: present
  weight:
    description:
      - Relative weight of the backend, from 0 to 256 (0 sends it no new connection).
      - Left unchanged when not given. Ignored with O(state=absent).
    type: int
  wait:
    description:
      - With O(state=drained), poll the backends until the backend's active connections reach
        0 (also when it was already draining).
    type: bool
    default: true
  drain_timeout:
    description:
      - Seconds to wait with O(state=drained) and O(wait=true) before failing.
      - While the load balancer's holder cannot be asked, active connections are unknown and
        the module keeps waiting.
    type: float
    default: 60
attributes:
  check_mode:
    support: full
    description: Reads the backends and reports what would change; no write endpoint is called
      and it does not wait for a drain.
  diff_mode:
    support: full
    description: Shows the backend's weight and state before and after.
notes:
  - Runs on the controller or any host that reaches the API (typically C(delegate_to)
    localhost); it needs only Python's standard library.
  - Fails when no resource group of the cluster has a load balancer (the API answers 404).
seealso:
  - module: clusterctl.cluster.cluster_info
  - module: clusterctl.cluster.cluster_failover
"""

EXAMPLES = r"""
- name: Drain node2 before maintenance, waiting up to 5 minutes for its connections to end
  clusterctl.cluster.cluster_backend:
    api_url: [http://10.0.0.11:7480, http://10.0.0.12:7480]
    api_token_file: /var/lib/clusterctl/demo/api-token
    node: node2
    state: drained
    drain_timeout: 300

- name: Put node2 back in rotation with half the usual weight
  clusterctl.cluster.cluster_backend:
    api_url: [http://10.0.0.11:7480]
    api_token: "{{ clusterctl_api_token }}"
    node: node2
    weight: 50

- name: Take node3 out of rotation at once
  clusterctl.cluster.cluster_backend:
    api_url: [http://10.0.0.11:7480]
    api_token_file: /var/lib/clusterctl/demo/api-token
    node: node3
    state: disabled

- name: Forget node4's registration
  clusterctl.cluster.cluster_backend:
    api_url: [http://10.0.0.11:7480]
    api_token_file: /var/lib/clusterctl/demo/api-token
    node: node4
    state: absent
"""

RETURN = r"""
node:
  description: Name of the backend.
  returned: always
  type: str
  sample: node2
backend:
  description:
    - The backend at the end (predicted in check mode), null after O(state=absent).
  returned: success
  type: dict
  contains:
    address:
      description: Address the load balancer sends the backend's connections to.
      type: str
      sample: 10.0.0.12
    port:
      description: Port the load balancer sends the backend's connections to.
      type: int
      sample: 8080
    weight:
      description: Weight, 0 to 256.
      type: int
      sample: 100
    state:
      description: Backend state, C(active), C(draining) or C(disabled).
      type: str
      sample: draining
    health:
      description: Health check result, C(up), C(down) or C(unknown).
      type: str
      sample: up
    active_connections:
      description: Connections the load balancer has open to the backend (null if unknown).
      type: int
      sample: 0
  sample: {"address": "10.0.0.12", "port": 8080, "weight": 100, "state": "draining",
           "health": "up", "active_connections": 0}
changed:
  description: Whether the backend's weight, state or registration was (or would be) changed.
  returned: always
  type: bool
  sample: true
diff:
  description: With C(--diff), the backend's weight and state (empty when not registered).
  returned: when diff mode is on
  type: dict
  sample: {"before": {"weight": 100, "state": "active"},
           "after": {"weight": 100, "state": "draining"}}
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterctl.cluster.plugins.module_utils.agent_api import (
    MAX_BACKEND_WEIGHT,
    AgentApiError,
    AgentAuthError,
    AgentNotFoundError,
    AgentUnavailableError,
    find_backend,
)
from ansible_collections.clusterctl.cluster.plugins.module_utils.agent_options import (
    AGENT_MUTUALLY_EXCLUSIVE,
    AGENT_REQUIRED_ONE_OF,
    agent_argument_spec,
    agent_from_module,
)

POLL_INTERVAL = 0.25
BACKEND_STATE = {"present": "active", "drained": "draining", "disabled": "disabled"}
RETURNED_FIELDS = ("address", "port", "weight", "state", "health", "active_connections")


def _diff_view(backend):
    if backend is None:
        return {}
    return {"weight": backend.get("weight"), "state": backend.get("state")}


def _public(backend):
    if backend is None:
        return None
    return {k: backend.get(k) for k in RETURNED_FIELDS}


class BackendModule:
    def __init__(self, module, api):
        self.module = module
        self.api = api
        self.p = module.params
        self.node = self.p["node"]

    def fail(self, msg, **extra):
        self.module.fail_json(msg=msg, node=self.node, **extra)

    def read_all(self):
        try:
            return self.api.backends()
        except AgentNotFoundError as exc:
            self.fail(f"cannot read the backends: {exc.error or exc}", status=exc.status)

    def read(self):
        """(backend or None, names of all backends) now."""
        answer = self.read_all()
        names = [b.get("node", "?") for b in answer.get("backends") or []]
        return find_backend(answer, self.node), names

    def wait_drained(self):
        """Poll until the backend has no active connection; the backend at the end."""
        timeout = self.p["drain_timeout"]
        deadline = time.monotonic() + timeout
        backend = None
        last_error = None
        while True:
            try:
                current, _ = self.read()
                last_error = None
                if current is None:
                    self.fail(f"backend {self.node} was removed while it was draining")
                backend = current
                if backend.get("active_connections") == 0:
                    return backend
            except AgentUnavailableError as exc:  # keep polling through a transient outage
                last_error = str(exc)
            if time.monotonic() >= deadline:
                count = (backend or {}).get("active_connections")
                seen = (
                    f"{count} active connection(s) left"
                    if count is not None
                    else "active connections unknown (the load balancer's holder did not say)"
                )
                if last_error:
                    seen += f"; last error: {last_error}"
                self.fail(
                    f"backend {self.node} was not drained within {timeout:g} s: {seen}",
                    active_connections=count,
                    backend=_public(backend),
                )
            time.sleep(POLL_INTERVAL)

    def run_absent(self, before):
        changed = before is not None
        if changed and not self.module.check_mode:
            answer = self.api.delete_backend(self.node) or {}
            changed = bool(answer.get("changed", True))
        return changed, None

    def run_set(self, before, names):
        if before is None:
            known = ", ".join(names) or "none"
            self.fail(f"node {self.node!r} is not a registered backend (backends: {known})")
        wanted_state = BACKEND_STATE[self.p["state"]]
        weight = self.p["weight"]
        change = {}
        if weight is not None and before.get("weight") != weight:
            change["weight"] = weight
        if before.get("state") != wanted_state:
            change["state"] = wanted_state
        changed = bool(change)
        if self.module.check_mode:
            return changed, dict(before, **change)
        after = before
        if changed:
            answer = self.api.set_backend(self.node, **change) or {}
            changed = bool(answer.get("changed", True))
        if self.p["state"] == "drained" and self.p["wait"]:
            after = self.wait_drained()
        elif change:
            after, _ = self.read()
            if after is None:
                self.fail(f"backend {self.node} disappeared after it was changed")
        return changed, after

    def run(self):
        before, names = self.read()
        if self.p["state"] == "absent":
            changed, after = self.run_absent(before)
        else:
            changed, after = self.run_set(before, names)
        result = dict(changed=changed, node=self.node, backend=_public(after))
        if self.module._diff:
            result["diff"] = {"before": _diff_view(before), "after": _diff_view(after)}
        self.module.exit_json(**result)


def main():
    argument_spec = agent_argument_spec()
    argument_spec.update(
        node=dict(type="str", required=True),
        state=dict(
            type="str", default="present", choices=["present", "drained", "disabled", "absent"]
        ),
        weight=dict(type="int"),
        wait=dict(type="bool", default=True),
        drain_timeout=dict(type="float", default=60.0),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=AGENT_MUTUALLY_EXCLUSIVE,
        required_one_of=AGENT_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    params = module.params
    node = params["node"]
    if not node or not node.strip():
        module.fail_json(msg="node must not be empty", node=node)
    weight = params["weight"]
    if weight is not None and not 0 <= weight <= MAX_BACKEND_WEIGHT:
        module.fail_json(
            msg=f"weight must be between 0 and {MAX_BACKEND_WEIGHT}, got {weight}", node=node
        )
    if params["drain_timeout"] < 0:
        module.fail_json(msg="drain_timeout must be 0 or more seconds", node=node)
    api = agent_from_module(module)
    try:
        BackendModule(module, api).run()
    except AgentAuthError as exc:
        module.fail_json(
            msg=f"agent API refused the token ({exc.error}); check api_token/api_token_file",
            node=node,
            status=exc.status,
        )
    except AgentNotFoundError as exc:
        module.fail_json(
            msg=f"node {node!r} is not a registered backend ({exc.error})",
            node=node,
            status=exc.status,
        )
    except AgentApiError as exc:
        extra = {} if exc.status is None else {"status": exc.status}
        module.fail_json(msg=str(exc), node=node, **extra)


if __name__ == "__main__":
    main()
