# The options every clusterctl module shares to reach the agents' REST API.


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Base URLs of the agents' API, for example V(https://10.0.0.11:7480), tried in order until
        one answers (an endpoint that is unreachable or answers 503 is skipped).
    type: list
    elements: str
    required: true
  api_token:
    description:
      - Bearer token of the API (the C(api-token) file that C(clusterctl up) writes).
      - Exactly one of O(api_token) and O(api_token_file) is required.
    type: str
  api_token_file:
    description: File holding the bearer token (read on the host running the module).
    type: path
  api_timeout:
    description: Timeout in seconds of each HTTP request.
    type: float
    default: 5
  ca_path:
    description:
      - CA certificate the agents' server certificates are verified against (the cluster's
        C(pki/ca.crt) in the state directory); with V(https://) URLs.
    type: path
  client_cert:
    description:
      - Client certificate the agents accept (C(pki/controller.crt) in the state directory);
        the agents' API over TLS refuses callers without one.
    type: path
  client_key:
    description: Key of O(client_cert).
    type: path
  validate_certs:
    description: Verify the agents' server certificates. Leave on outside of tests.
    type: bool
    default: true
"""
