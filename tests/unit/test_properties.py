"""Property-based tests (hypothesis) of the three parsers hostile input reaches: the
inventory, the agent's config and the API's requests. Arbitrary input gives a clean error
(one line), never a traceback, and never a hang (hypothesis' deadline per example)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterctl.agent.api import Api
from clusterctl.agent.config import ConfigError, config_from_dict
from clusterctl.agent.store.memory import MemoryStore
from clusterctl.errors import ClusterctlError
from clusterctl.inventory import load_inventory

from .agent.agentsim import Sim
from .agent.test_config import sample

SETTINGS = settings(
    max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
nasty_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60
) | st.sampled_from(["bad;name", "x\n", "$(reboot)", "-rf", "", " ", "node1\0", "a" * 300])


@SETTINGS
@given(
    names=st.lists(nasty_text, min_size=1, max_size=5),
    values=st.dictionaries(
        st.sampled_from(
            [
                "ansible_host",
                "ansible_port",
                "ansible_user",
                "clusterctl_node_address",
                "ansible_ssh_private_key_file",
            ]
        ),
        json_values | nasty_text,
        max_size=5,
    ),  # fmt: skip
)
def test_inventory_parser_gives_a_clean_error_or_nodes(tmp_path_factory, names, values) -> None:
    path = Path(tmp_path_factory.mktemp("inv")) / "hosts.yml"
    hosts = {name: dict(values) for name in names}
    hosts.update({f"ok{i}": {"ansible_host": f"10.0.0.{i}"} for i in (1, 2, 3)})
    try:
        text = yaml.safe_dump({"all": {"children": {"cluster": {"hosts": hosts}}}})
    except yaml.YAMLError:
        return
    path.write_text(text)
    try:
        nodes = load_inventory(path)
    except ClusterctlError as exc:
        assert "\n" not in exc.message
        return
    for node in nodes:
        assert 1 <= node.port <= 65535
        assert "\n" not in node.name and ";" not in node.name


@SETTINGS
@given(
    key=st.sampled_from(
        ["node", "cluster", "etcd_endpoints", "lease_ttl", "renew_interval", "fence_margin",
         "api_port", "api_bind", "groups", "backend", "tls_ca_file", "etcd_user",
         "etcd_password_file", "standby", "member_rejoin_wait", "unknown"]
    ),
    value=json_values | nasty_text,
)  # fmt: skip
def test_agent_config_gives_a_clean_error_or_a_valid_config(key: str, value: Any) -> None:
    data = sample(**{key: value})
    try:
        config = config_from_dict(json.loads(json.dumps(data)))
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    except ValueError:  # json cannot carry NaN/inf etc. the same way: not the config's input
        return
    assert config.validate() is config


@SETTINGS
@given(
    group=st.dictionaries(
        st.sampled_from(["name", "resources", "migration_threshold", "bans", "preferred",
                         "monitor_interval", "restart_grace", "extra"]),
        json_values | nasty_text,
        max_size=6,
    ),
)  # fmt: skip
def test_agent_config_groups_give_a_clean_error(group: dict) -> None:
    try:
        config_from_dict(sample(groups=[group]))
    except ConfigError as exc:
        assert "\n" not in str(exc)


_API: dict[str, Api] = {}


def _api() -> Api:
    if "api" not in _API:
        sim = Sim()
        sim.run(1.0)
        _API["api"] = Api(sim.agents["node1"], "tok", MemoryStore(sim.backend, "api"))
    return _API["api"]


@SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]) | nasty_text,
    target=st.one_of(
        nasty_text,
        st.lists(
            st.sampled_from(["v1", "groups", "web", "move", "ban", "nodes", "node1", "standby",
                             "backends", "..", "%00", "metrics", "status", "health", ""]),
            max_size=5,
        ).map(lambda parts: "/" + "/".join(parts)),
    ),
    body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
)  # fmt: skip
def test_api_requests_get_a_json_answer(method: str, target: str, body: bytes) -> None:
    reply = _api().handle(method, target, "Bearer tok", body)
    assert 200 <= reply.status < 600
    if reply.content_type == "application/json":
        answer = json.loads(reply.body)
        if reply.status >= 400:
            assert set(answer) == {"error"} and "\n" not in answer["error"]
    assert reply.status != 500, reply.body
