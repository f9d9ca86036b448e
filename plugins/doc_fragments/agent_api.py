# The options every clusterctl module shares to reach the agents' REST API.


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Base URLs of the agents' API, for example V(http://10.0.0.11:7480), tried in order until
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
"""
