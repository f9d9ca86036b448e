"""Configuration loading and the rules ``validate`` enforces."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from clusterctl.agent.config import (
    AgentConfig,
    ConfigError,
    GroupSpec,
    ResourceSpec,
    config_from_dict,
    load_config,
)

VIP = {"name": "vip", "type": "vip", "address": "10.0.0.100", "prefix": 24, "interface": "eth0"}
WEB = {"name": "nginx", "type": "systemd", "unit": "nginx.service", "prestart_safe": True}


def sample(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node": "node1",
        "cluster": "demo",
        "etcd_endpoints": ["http://10.0.0.1:2379", "http://10.0.0.2:2379"],
        "groups": [{"name": "web", "resources": [VIP, WEB], "migration_threshold": 2}],
    }
    data.update(overrides)
    return data


def rule_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(info.value.rule + ": ")
    return info.value.rule


def test_defaults_are_valid_and_documented() -> None:
    config = config_from_dict(sample())
    assert (config.lease_ttl, config.renew_interval, config.renew_timeout) == (1.0, 0.2, 0.25)
    assert (config.fence_margin, config.loop_interval, config.request_timeout) == (0.4, 0.1, 0.5)
    (group,) = config.groups
    assert [r.name for r in group.resources] == ["vip", "nginx"]
    assert group.resources[0].is_exclusive and not group.resources[0].prestart_safe
    assert group.resources[1].prestart_safe and not group.resources[1].is_exclusive
    assert group.resources[0].params == {
        "address": "10.0.0.100",
        "prefix": 24,
        "interface": "eth0",
        "lifetime": 1,  # the fencing deadline (0.6 s), in the kernel's whole seconds
    }
    assert group.migration_threshold == 2


@pytest.mark.parametrize(
    ("ttl", "renew", "margin", "lifetime"), [(1, 0.25, 0.4, 1), (2, 0.5, 0.8, 2), (5, 1.25, 2.0, 3)]
)
def test_timings_scale_with_the_lease_unless_set(ttl, renew, margin, lifetime) -> None:
    config = config_from_dict({**sample(), "lease_ttl": ttl})
    assert (config.renew_timeout, config.fence_margin) == (renew, margin)
    assert config.groups[0].resources[0].params["lifetime"] == lifetime
    set_by_hand = config_from_dict({**sample(), "lease_ttl": ttl, "fence_margin": 0.3 * ttl})
    assert set_by_hand.fence_margin == 0.3 * ttl and set_by_hand.renew_timeout == renew


def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(sample()))
    assert load_config(path).node == "node1"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="^config syntax: "):
        load_config(path)
    with pytest.raises(ConfigError, match="^config file readable: "):
        load_config(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"renew_interval": 0.5}, "renew_interval * 3 <= lease_ttl"),
        ({"holding_renew_interval": 0.3}, "holding_renew_interval <= renew_interval"),
        ({"holding_renew_interval": 0}, "positive numbers"),
        ({"fence_margin": 0.2}, "fence_margin > renew_timeout"),
        ({"fence_margin": 1.0}, "fence_margin < lease_ttl"),
        ({"lease_ttl": -1}, "positive numbers"),
        ({"renew_timeout": 0}, "positive numbers"),
        ({"loop_interval": "fast"}, "positive numbers"),
        ({"loop_interval": 0.3, "lease_ttl": 2.0, "renew_interval": 0.25},
         "loop_interval <= renew_interval"),
        ({"node": "no/slash"}, "node name"),
        ({"etcd_endpoints": []}, "etcd_endpoints"),
        ({"etcd_endpoints": "http://x:1"}, "etcd_endpoints"),
        ({"etcd_endpoints": ["10.0.0.1:2379"]}, "etcd_endpoints"),
        ({"colour": "blue"}, "known settings"),
        ({"groups": [{"name": "web", "resources": []}]}, "group resources non-empty"),
        ({"groups": [{"name": "web", "resources": [{"type": "docker"}]}]}, "known resource types"),
        ({"groups": [{"name": "web", "resources": [VIP, VIP]}]}, "unique resource names"),
        ({"groups": [{"name": "web", "resources": [{"type": "systemd"}]}]}, "resource parameters"),
        ({"groups": [{"name": "web", "resources": [{**VIP, "prestart_safe": True}]}]},
         "exclusive resources are not prestart_safe"),
        ({"groups": [{"name": "web", "resources": [{**VIP, "address": "10.0.0.300"}]}]},
         "vip address"),
        ({"groups": [{"name": "web", "resources": [{**VIP, "prefix": 33}]}]}, "vip prefix"),
        ({"groups": [{"name": "web", "resources": [WEB], "migration_threshold": 0}]},
         "migration_threshold >= 1"),
        ({"groups": [{"name": "web", "resources": [WEB]}, {"name": "web", "resources": [WEB]}]},
         "unique group names"),
        ({"api_port": 70000}, "api_port 0..65535"),
        ({"api_port": -1}, "api_port 0..65535"),
        ({"api_port": True}, "api_port 0..65535"),
        ({"api_port": "7480"}, "api_port 0..65535"),
        ({"api_bind": "everywhere"}, "api_bind is an IP address"),
        ({"api_bind": 0}, "api_bind is an IP address"),
        ({"api_token_file": ""}, "api_token_file"),
    ],
)  # fmt: skip
def test_each_rule_is_named(overrides: dict[str, Any], rule: str) -> None:
    assert rule_of(sample(**overrides)) == rule


def test_validate_on_dataclass_directly() -> None:
    group = GroupSpec("web", (ResourceSpec("nginx", "systemd", {"unit": "nginx.service"}),))
    config = AgentConfig(node="n1", etcd_endpoints=("http://127.0.0.1:2379",), groups=(group,))
    assert config.validate() is config
    with pytest.raises(ConfigError, match=r"^fence_margin > renew_timeout: 0.25 <= 0.25"):
        dataclasses.replace(config, fence_margin=0.25).validate()


def test_api_settings() -> None:
    config = config_from_dict(sample())
    assert (config.api_port, config.api_bind) == (7480, "0.0.0.0")
    assert config.api_token_file == "/etc/clusterctl/api-token" and config.api_enabled
    off = config_from_dict(sample(api_port=0, api_token_file=""))
    assert not off.api_enabled
    assert config_from_dict(sample(api_bind="::1")).api_bind == "::1"
