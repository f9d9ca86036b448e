#!/usr/bin/python
# Copyright: clusterctl developers
# Apache License 2.0 (see galaxy.yml)
# ruff: noqa: E402  (imports follow DOCUMENTATION/EXAMPLES/RETURN, as in Ansible modules)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cluster_info
short_description: Read the status of a clusterctl cluster
description:
  - Returns the whole C(/v1/status) answer of clusterctl's failover agent API
    (C(docs/agent-api.md)), that is quorum, members and resource groups with their holder,
    state, bans, pending move and fail counts.
  - Read-only; never reports a change.
  - Any node answers for the whole cluster, so O(api_url) lists several endpoints which are
    tried in order.
version_added: "0.1.0"
extends_documentation_fragment:
  - clusterctl.cluster.agent_api
author:
  - clusterctl developers
options: {}
attributes:
  check_mode:
    support: full
    description: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
notes:
  - Runs on the controller or any host that reaches the API; it needs only Python's standard
    library.
seealso:
  - module: clusterctl.cluster.cluster_failover
"""

EXAMPLES = r"""
- name: Read the cluster status
  clusterctl.cluster.cluster_info:
    api_url: [http://10.0.0.11:7480, http://10.0.0.12:7480]
    api_token_file: /var/lib/clusterctl/demo/api-token
  register: info

- name: Show who runs web
  ansible.builtin.debug:
    msg: "{{ (info.cluster.groups | selectattr('name', '==', 'web') | first).node }}"
"""

RETURN = r"""
cluster:
  description: The C(/v1/status) answer of the first endpoint that answered.
  returned: success
  type: dict
  contains:
    cluster:
      description: Name of the cluster.
      type: str
      sample: demo
    node:
      description: The node that answered.
      type: str
      sample: node1
    quorum:
      description: Whether the answering node sees a quorum.
      type: bool
      sample: true
    sentence:
      description: One-line summary.
      type: str
      sample: "3/3 members online; web started on node1"
    members:
      description: Cluster members.
      type: list
      elements: dict
      sample: [{"name": "node1", "address": "10.0.0.11", "online": true, "standby": false}]
    groups:
      description: Resource groups.
      type: list
      elements: dict
      sample: [{"name": "web", "vip": "10.0.0.100", "node": "node1", "state": "started",
                "failcounts": {}, "bans": [], "move": null, "migration_threshold": 3}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterctl.cluster.plugins.module_utils.agent_api import (
    AgentApiError,
    AgentAuthError,
)
from ansible_collections.clusterctl.cluster.plugins.module_utils.agent_options import (
    AGENT_MUTUALLY_EXCLUSIVE,
    AGENT_REQUIRED_ONE_OF,
    agent_argument_spec,
    agent_from_module,
)


def main():
    module = AnsibleModule(
        argument_spec=agent_argument_spec(),
        mutually_exclusive=AGENT_MUTUALLY_EXCLUSIVE,
        required_one_of=AGENT_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    api = agent_from_module(module)
    try:
        status = api.status()
    except AgentAuthError as exc:
        module.fail_json(
            msg=f"agent API refused the token ({exc.error}); check api_token/api_token_file",
            status=exc.status,
        )
    except AgentApiError as exc:
        extra = {} if exc.status is None else {"status": exc.status}
        module.fail_json(msg=str(exc), **extra)
    module.exit_json(changed=False, cluster=status)


if __name__ == "__main__":
    main()
