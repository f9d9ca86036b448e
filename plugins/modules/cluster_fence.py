#!/usr/bin/python
# Copyright: clusterctl developers
# Apache License 2.0 (see galaxy.yml)
# ruff: noqa: E402  (imports follow DOCUMENTATION/EXAMPLES/RETURN, as in Ansible modules)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cluster_fence
short_description: Confirm that a node of a clusterctl cluster is off
description:
  - A resource group with C(fencing) set to C(required) starts on a new node only after its previous
    owner was powered off through that node's fence device. When the device cannot do it, an
    operator confirms that the node is off; its groups may then start elsewhere (like
    Pacemaker's C(stonith_admin --confirm)).
  - Reads the cluster's status first; a node that owns no group needs no confirmation and
    nothing is changed. A node that is online is refused.
  - Only confirm a node you have seen off. If it still runs, a group on shared storage may run
    on two nodes and corrupt its data.
version_added: "0.1.0"
extends_documentation_fragment:
  - clusterctl.cluster.agent_api
author:
  - clusterctl developers
options:
  node:
    description: The node that is off.
    type: str
    required: true
  state:
    description: C(confirmed) says the node is off.
    type: str
    choices: [confirmed]
    default: confirmed
attributes:
  check_mode:
    support: full
    description: Reports which groups a confirmation would release, and releases none.
  diff_mode:
    support: full
    description: The groups the node owns, before and after.
notes:
  - The agents fence nodes themselves through their devices; this module is for when they
    cannot.
seealso:
  - module: clusterctl.cluster.cluster_info
"""

EXAMPLES = r"""
- name: node3 was pulled from the rack; let its groups start elsewhere
  clusterctl.cluster.cluster_fence:
    node: node3
    api_url: [https://10.0.0.11:7480, https://10.0.0.12:7480]
    api_token_file: /var/lib/clusterctl/prod/api-token
    ca_path: /var/lib/clusterctl/prod/pki/ca.crt
    client_cert: /var/lib/clusterctl/prod/pki/controller.crt
    client_key: /var/lib/clusterctl/prod/pki/controller.key
"""

RETURN = r"""
node:
  description: The node confirmed off.
  returned: always
  type: str
  sample: node3
released:
  description: The groups it owned that may now start elsewhere (would, in check mode).
  returned: success
  type: list
  elements: str
  sample: [shared]
sentence:
  description: What the agents recorded.
  returned: when changed and not in check mode
  type: str
  sample: "an operator confirmed node3 is off; shared may start elsewhere"
diff:
  description: With C(--diff), the groups the node owns before and after.
  returned: when diff mode is on
  type: dict
  sample: {"before": {"owns": ["shared"]}, "after": {"owns": []}}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterctl.cluster.plugins.module_utils.agent_api import (
    AgentApiError,
    find_member,
)
from ansible_collections.clusterctl.cluster.plugins.module_utils.agent_options import (
    AGENT_MUTUALLY_EXCLUSIVE,
    AGENT_REQUIRED_ONE_OF,
    agent_argument_spec,
    agent_from_module,
)


def owned(status, node):
    """The groups whose owner (a fencing group's) is ``node``."""
    return sorted(g["name"] for g in status.get("groups") or [] if g.get("owner") == node)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            agent_argument_spec(),
            node=dict(type="str", required=True),
            state=dict(type="str", choices=["confirmed"], default="confirmed"),
        ),
        mutually_exclusive=AGENT_MUTUALLY_EXCLUSIVE,
        required_one_of=AGENT_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    node = module.params["node"]
    api = agent_from_module(module)
    try:
        status = api.status()
    except AgentApiError as exc:
        module.fail_json(msg=f"cannot read the cluster's status: {exc}", node=node)
    member = find_member(status, node)
    if member is None:
        names = ", ".join(m.get("name", "?") for m in status.get("members") or [])
        module.fail_json(msg=f"{node!r} is not a node of this cluster (nodes: {names})", node=node)
    if member.get("online"):
        module.fail_json(
            msg=f"{node} is online (its agent renews its lease): it is not off", node=node
        )
    before = owned(status, node)
    result = dict(changed=bool(before), node=node, released=before)
    if module._diff:
        result["diff"] = {"before": {"owns": before}, "after": {"owns": []}}
    if not before or module.check_mode:
        module.exit_json(**result)
    try:
        answer = api.confirm_fenced(node)
    except AgentApiError as exc:
        module.fail_json(msg=f"the confirmation was refused: {exc.error or exc}", node=node)
    result["released"] = list(answer.get("released") or [])
    result["sentence"] = answer.get("sentence", "")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
