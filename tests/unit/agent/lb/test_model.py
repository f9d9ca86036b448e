"""LB model: validation rules and messages, the backends/<node> JSON round trip."""

from __future__ import annotations

import pytest

from clusterctl.agent.config import ConfigError
from clusterctl.agent.lb.model import (
    Backend,
    BackendHealth,
    LbConfigError,
    LbSpec,
    drain_complete,
)

SPEC = LbSpec("10.0.0.100", 80, 8080)


def test_defaults_are_valid() -> None:
    assert SPEC.validate() is SPEC
    assert LbSpec("10.0.0.100", 80, 8080, engine="haproxy", algorithm="leastconn").validate()


def test_unknown_algorithm_lists_known_ones_per_engine() -> None:
    with pytest.raises(LbConfigError) as err:
        LbSpec("10.0.0.100", 80, 8080, algorithm="leastconn").validate()
    assert err.value.rule == "known lb algorithms"
    assert "(known: roundrobin, weighted, source)" in str(err.value)
    with pytest.raises(LbConfigError, match=r"known: roundrobin, leastconn, source"):
        LbSpec("10.0.0.100", 80, 8080, engine="haproxy", algorithm="weighted").validate()


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"address": "10.0.0.300"}, "lb address"),
        ({"port": 0}, "lb port"),
        ({"backend_port": 70000}, "lb backend_port"),
        ({"engine": "ipvs"}, "known lb engines"),
        ({"mode": "udp"}, "known lb modes"),
        ({"mode": "http"}, "mode http needs engine haproxy"),
        ({"check_path": "/a b"}, "lb check_path"),
        ({"check_path": "health"}, "lb check_path"),
        ({"expected_status": 42}, "lb expected_status 100..599"),
        ({"inter": 0}, "positive numbers"),
        ({"rise": 0}, "lb rise >= 1"),
        ({"fall": True}, "lb fall >= 1"),
        ({"drain_timeout": -1}, "lb drain_timeout >= 0"),
    ],
)
def test_spec_rules(changes: dict, rule: str) -> None:
    values = {"address": "10.0.0.100", "port": 80, "backend_port": 8080, **changes}
    with pytest.raises(LbConfigError) as err:
        LbSpec(**values).validate()
    assert err.value.rule == rule
    assert isinstance(err.value, ConfigError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("backend", "rule"),
    [
        (Backend("node1", "10.0.0.11", 8080, weight=257), "backend weight 0..256"),
        (Backend("node1", "10.0.0.11", 8080, weight=-1), "backend weight 0..256"),
        (Backend("node1", "10.0.0.11", 8080, weight=True), "backend weight 0..256"),
        (Backend("node1", "10.0.0.11", 8080, state="up"), "known backend states"),
        (Backend("no de", "10.0.0.11", 8080), "backend node name"),
        (Backend("node1", "host", 8080), "backend address"),
        (Backend("node1", "10.0.0.11", 0), "backend port"),
    ],
)
def test_backend_rules(backend: Backend, rule: str) -> None:
    with pytest.raises(LbConfigError) as err:
        backend.validate()
    assert err.value.rule == rule


def test_backend_state_message_lists_known_states() -> None:
    with pytest.raises(LbConfigError, match=r"known: active, draining, disabled"):
        Backend("node1", "10.0.0.11", 8080, state="up").validate()


def test_backend_json_round_trip() -> None:
    b = Backend("node2", "10.0.0.12", 8080, weight=256, state="draining")
    text = b.to_json()
    assert text == '{"address": "10.0.0.12", "port": 8080, "state": "draining", "weight": 256}'
    assert Backend.from_json("node2", text) == b
    # Registration may give only address and port.
    minimal = Backend.from_json("node3", '{"address": "10.0.0.13", "port": 80}')
    assert (minimal.weight, minimal.state) == (1, "active")


@pytest.mark.parametrize(
    "text",
    ["not json", "[1]", '{"address": "10.0.0.1"}', '{"address": "10.0.0.1", "port": 1, "x": 1}'],
)
def test_backend_json_errors(text: str) -> None:
    with pytest.raises(LbConfigError) as err:
        Backend.from_json("node1", text)
    assert err.value.rule == "backend syntax"


def test_backend_json_is_validated() -> None:
    with pytest.raises(LbConfigError, match="weight"):
        Backend.from_json("n", '{"address": "10.0.0.1", "port": 80, "weight": 300}')


def test_from_params() -> None:
    spec = LbSpec.from_params(
        {"address": "10.0.0.100", "port": 80, "backend_port": 8080, "engine": "haproxy"}
    )
    assert spec.engine == "haproxy"
    with pytest.raises(LbConfigError, match="unknown: algoritm"):
        LbSpec.from_params({"address": "10.0.0.100", "port": 80, "backend_port": 1, "algoritm": 1})
    with pytest.raises(LbConfigError, match="missing backend_port"):
        LbSpec.from_params({"address": "10.0.0.100", "port": 80})


def test_backend_health_transitions() -> None:
    h = BackendHealth(False)
    h = h.after(True, rise=2, fall=3)
    assert h == BackendHealth(False, 1, 0)
    h = h.after(True, rise=2, fall=3)
    assert h == BackendHealth(True, 2, 0)


def test_drain_complete() -> None:
    assert drain_complete(0, started_at=10.0, now=10.0, timeout=30.0)
    assert not drain_complete(3, started_at=10.0, now=39.9, timeout=30.0)
    assert drain_complete(3, started_at=10.0, now=40.0, timeout=30.0)
