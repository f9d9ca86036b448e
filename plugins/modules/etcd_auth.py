#!/usr/bin/python
# Copyright: clusterctl developers
# Apache License 2.0 (see galaxy.yml)
# ruff: noqa: E402  (imports follow DOCUMENTATION/EXAMPLES/RETURN, as in Ansible modules)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: etcd_auth
short_description: Turn on etcd's RBAC with a root user and users limited to a key prefix
description:
  - Makes an etcd cluster's authentication match the request, through etcd's v3 JSON
    gateway over mutual TLS, and changes only what differs.
  - Ensures the V(root) user (with etcd's V(root) role) and its password, each role in
    O(roles) with read-write permission on its key prefix, each user in O(users) with its
    password and roles, then turns authentication on.
  - Passwords are read from files on the host running the module (typically the
    controller, with C(delegate_to) localhost) and never logged or returned.
version_added: "0.3.0"
author:
  - clusterctl developers
options:
  endpoints:
    description: Client URLs of etcd members (V(https://10.0.0.11:2379)), tried in order.
    type: list
    elements: str
    required: true
  ca_path:
    description: CA certificate that signed the members' server certificates.
    type: path
    required: true
  client_cert:
    description: Client certificate etcd accepts (signed by its trusted CA, no common name).
    type: path
    required: true
  client_key:
    description: Key of O(client_cert).
    type: path
    required: true
  root_password_file:
    description: File holding the password of the V(root) user.
    type: path
    required: true
  roles:
    description: Roles with read-write permission on every key starting with O(roles[].prefix).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Role name.
        type: str
        required: true
      prefix:
        description: Key prefix, for example V(/clusterctl/demo/).
        type: str
        required: true
  users:
    description: Users and the roles they have (exactly these).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: User name.
        type: str
        required: true
      password_file:
        description: File holding the user's password.
        type: path
        required: true
      roles:
        description: Role names.
        type: list
        elements: str
        required: true
  timeout:
    description: Seconds per HTTP request.
    type: float
    default: 5
attributes:
  check_mode:
    support: full
    description: Reads the users, roles and whether authentication is on; changes nothing.
  diff_mode:
    support: full
    description: Shows the roles, users and the authentication switch before and after.
notes:
  - A password is checked by authenticating as its user; a user whose password differs from
    its file gets the file's password.
  - etcd's gateway refuses client certificates with a common name once authentication is on.
"""

EXAMPLES = r"""
- name: Limit the agents to their cluster's keys
  clusterctl.cluster.etcd_auth:
    endpoints: [https://10.88.0.11:2379]
    ca_path: "{{ pki }}/ca.crt"
    client_cert: "{{ pki }}/controller.crt"
    client_key: "{{ pki }}/controller.key"
    root_password_file: "{{ state }}/etcd-root-password"
    roles:
      - name: clusterctl-demo
        prefix: /clusterctl/demo/
    users:
      - name: clusterctl-agent
        password_file: "{{ state }}/etcd-agent-password"
        roles: [clusterctl-demo]
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
actions:
  description: What was done (or, in check mode, would be done), one sentence each.
  returned: always
  type: list
  elements: str
  sample: ["add role clusterctl-demo", "enable authentication"]
auth_enabled:
  description: Whether authentication is on after the module ran (before, in check mode).
  returned: always
  type: bool
"""

import base64
import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

AUTH_OFF = "authentication is not enabled"


class EtcdError(Exception):
    pass


def _b64(text):
    return base64.b64encode(text.encode()).decode()


def prefix_end(prefix):
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


class Gateway:
    """etcd's JSON gateway on the first member that answers, with an optional token."""

    def __init__(self, params):
        self.params = params
        self.token = None

    def call(self, path, body, token=True):
        errors = []
        for endpoint in self.params["endpoints"]:
            headers = {"Content-Type": "application/json"}
            if token and self.token:
                headers["Authorization"] = self.token
            try:
                resp = open_url(
                    endpoint.rstrip("/") + path,
                    data=json.dumps(body),
                    method="POST",
                    headers=headers,
                    ca_path=self.params["ca_path"],
                    client_cert=self.params["client_cert"],
                    client_key=self.params["client_key"],
                    validate_certs=True,
                    use_proxy=False,
                    timeout=self.params["timeout"],
                )
                return json.loads(resp.read() or b"{}")
            except Exception as exc:  # HTTPError carries etcd's JSON error
                reply = _error_reply(exc)
                if reply is not None:
                    return reply
                errors.append(f"{endpoint}: {exc}")
        raise EtcdError("no etcd member answered: " + "; ".join(errors))


def _error_reply(exc):
    read = getattr(exc, "read", None)
    if read is None:
        return None
    try:
        reply = json.loads(read() or b"{}")
    except ValueError:
        return None
    return reply if isinstance(reply, dict) and ("error" in reply or "message" in reply) else None


def _message(reply):
    return str(reply.get("message") or reply.get("error") or "")


def _read_secret(module, path):
    try:
        with open(path) as handle:
            value = handle.read().strip()
    except OSError as exc:
        module.fail_json(msg=f"cannot read {path}: {exc.strerror}")
    if not value:
        module.fail_json(msg=f"{path} is empty")
    return value


def _authenticate(gateway, name, password):
    """The token, "" when authentication is off, None when the password is wrong."""
    reply = gateway.call("/v3/auth/authenticate", {"name": name, "password": password}, False)
    if reply.get("token"):
        return reply["token"]
    if AUTH_OFF in _message(reply):
        return ""
    return None


def _check(reply, what):
    if "error" in reply or ("code" in reply and "message" in reply):
        raise EtcdError(f"{what}: {_message(reply)}")
    return reply


def run(module):
    params = module.params
    gateway = Gateway(params)
    root_password = _read_secret(module, params["root_password_file"])
    token = _authenticate(gateway, "root", root_password)
    if token is None:
        module.fail_json(
            msg="etcd refused the root user's password from " + params["root_password_file"],
            hint="the cluster's etcd was set up with another password file",
        )
    auth_enabled = token != ""
    gateway.token = token or None
    actions = []

    def do(sentence, path, body):
        actions.append(sentence)
        if not module.check_mode:
            _check(gateway.call(path, body), sentence)

    users = _check(gateway.call("/v3/auth/user/list", {}), "list users").get("users") or []
    roles = _check(gateway.call("/v3/auth/role/list", {}), "list roles").get("roles") or []
    before = {"auth_enabled": auth_enabled, "roles": {}, "users": {}}
    if "root" not in users:
        do("add user root", "/v3/auth/user/add", {"name": "root", "password": root_password})
        do("grant role root to root", "/v3/auth/user/grant", {"user": "root", "role": "root"})
    for role in params["roles"]:
        key, end = _b64(role["prefix"]), base64.b64encode(prefix_end(role["prefix"])).decode()
        perms = []
        if role["name"] in roles:
            perms = (
                _check(gateway.call("/v3/auth/role/get", {"role": role["name"]}), "get role").get(
                    "perm"
                )
                or []
            )
        else:
            do(f"add role {role['name']}", "/v3/auth/role/add", {"name": role["name"]})
        before["roles"][role["name"]] = [
            f"{p.get('permType', 'READ')} {base64.b64decode(p.get('key', '')).decode()}"
            for p in perms
        ]
        wanted = {"permType": "READWRITE", "key": key, "range_end": end}
        if not any(
            p.get("permType") == "READWRITE" and p.get("key") == key and p.get("range_end") == end
            for p in perms
        ):
            do(
                f"grant READWRITE {role['prefix']} to role {role['name']}",
                "/v3/auth/role/grant",
                {"name": role["name"], "perm": wanted},
            )
    for user in params["users"]:
        password = _read_secret(module, user["password_file"])
        have = []
        if user["name"] in users:
            have = (
                _check(gateway.call("/v3/auth/user/get", {"name": user["name"]}), "get user").get(
                    "roles"
                )
                or []
            )
            before["users"][user["name"]] = sorted(have)
            # with auth off a password cannot be checked: set it (same result if equal)
            if not auth_enabled or _authenticate(gateway, user["name"], password) is None:
                do(
                    f"set the password of {user['name']} from its file",
                    "/v3/auth/user/changepw",
                    {"name": user["name"], "password": password},
                )
        else:
            do(
                f"add user {user['name']}",
                "/v3/auth/user/add",
                {"name": user["name"], "password": password},
            )
        for role in sorted(set(user["roles"]) - set(have)):
            do(
                f"grant role {role} to {user['name']}",
                "/v3/auth/user/grant",
                {"user": user["name"], "role": role},
            )
        for role in sorted(set(have) - set(user["roles"])):
            do(
                f"revoke role {role} from {user['name']}",
                "/v3/auth/user/revoke",
                {"name": user["name"], "role": role},
            )
    if not auth_enabled:
        do("enable authentication", "/v3/auth/enable", {})
    after = {
        "auth_enabled": True,
        "roles": {r["name"]: [f"READWRITE {r['prefix']}"] for r in params["roles"]},
        "users": {u["name"]: sorted(u["roles"]) for u in params["users"]},
    }
    result = {
        "changed": bool(actions),
        "actions": actions,
        "auth_enabled": auth_enabled if module.check_mode else True,
    }
    if module._diff:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            endpoints=dict(type="list", elements="str", required=True),
            ca_path=dict(type="path", required=True),
            client_cert=dict(type="path", required=True),
            client_key=dict(type="path", required=True),
            root_password_file=dict(type="path", required=True, no_log=False),
            roles=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True), prefix=dict(type="str", required=True)
                ),
            ),
            users=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True),
                    password_file=dict(type="path", required=True, no_log=False),
                    roles=dict(type="list", elements="str", required=True),
                ),
            ),
            timeout=dict(type="float", default=5.0),
        ),
        supports_check_mode=True,
    )
    try:
        run(module)
    except EtcdError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
