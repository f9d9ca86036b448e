# Copyright: clusterctl developers
# Apache License 2.0 (see galaxy.yml)
"""The options every clusterctl.cluster module takes to reach the agent API, and the client
(module_utils/agent_api.py) built from them."""

from __future__ import annotations

from ansible_collections.clusterctl.cluster.plugins.module_utils.agent_api import (
    DEFAULT_API_TIMEOUT,
    AgentApi,
    client_context,
)


def agent_argument_spec():
    """Options every clusterctl.cluster module takes to reach the agent API."""
    return dict(
        api_url=dict(type="list", elements="str", required=True),
        api_token=dict(type="str", no_log=True),
        api_token_file=dict(type="path"),
        api_timeout=dict(type="float", default=DEFAULT_API_TIMEOUT),
        ca_path=dict(type="path"),
        client_cert=dict(type="path"),
        client_key=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
    )


# Pass these to AnsibleModule together with agent_argument_spec().
AGENT_MUTUALLY_EXCLUSIVE = [("api_token", "api_token_file")]
AGENT_REQUIRED_ONE_OF = [("api_token", "api_token_file")]


def agent_from_module(module):
    """An AgentApi from the module's shared options; fails the module on a bad option."""
    params = module.params
    urls = [u.strip().rstrip("/") for u in params["api_url"] if u and u.strip()]
    if not urls:
        module.fail_json(msg="api_url must list at least one URL such as http://10.0.0.11:7480")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            module.fail_json(msg=f"api_url {url!r} must start with http:// or https://")
    token = params.get("api_token")
    if token is None:
        path = params["api_token_file"]
        try:
            with open(path, encoding="utf-8") as handle:
                # the first line: during `clusterctl token rotate` a second one follows
                lines = [line.strip() for line in handle.read().splitlines() if line.strip()]
            token = lines[0] if lines else ""
        except OSError as exc:
            module.fail_json(msg=f"cannot read api_token_file {path}: {exc.strerror or exc}")
        if not token:
            module.fail_json(msg=f"api_token_file {path} is empty")
        module.no_log_values.add(token)
    else:
        token = token.strip()
    if params["api_timeout"] <= 0:
        module.fail_json(msg="api_timeout must be greater than 0")
    if bool(params.get("client_cert")) != bool(params.get("client_key")):
        module.fail_json(msg="client_cert and client_key go together")
    context = None
    if any(url.startswith("https://") for url in urls):
        try:
            context = client_context(
                params.get("ca_path"),
                params.get("client_cert"),
                params.get("client_key"),
                params.get("validate_certs", True),
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            module.fail_json(msg=f"cannot use the TLS files: {exc}")
    return AgentApi(urls, token, params["api_timeout"], context)
