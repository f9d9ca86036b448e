"""The lb resource: backends from etcd, health from checks, the engine converged."""

from __future__ import annotations

from clusterctl.agent.config import ResourceSpec
from clusterctl.agent.lb.model import Backend
from clusterctl.agent.resources.lb import LoadBalancer

from .fakes import FakeRunner

PARAMS = {"address": "10.0.0.100", "port": 80, "backend_port": 80, "rise": 2, "fall": 2}
A = Backend("node1", "10.0.0.11", 80)
B = Backend("node2", "10.0.0.12", 80)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(healthy: dict[str, bool]) -> tuple[LoadBalancer, FakeRunner, Clock]:
    runner = FakeRunner()
    clock = Clock()

    def check(address: str, port: int, path: str, status: int, timeout: float) -> bool:
        return healthy.get(address, False)

    spec = ResourceSpec("lb", "lb", dict(PARAMS))
    lb = LoadBalancer(spec, runner, check=check, clock=clock)
    return lb, runner, clock


def scripts(runner: FakeRunner) -> list[str]:
    return [stdin for argv, stdin in runner.calls if argv[:2] == ["nft", "-f"] and stdin]


def test_start_balances_over_healthy_backends_and_stop_removes_the_table():
    lb, runner, _ = make({"10.0.0.11": True, "10.0.0.12": True})
    lb.set_backends([A, B])
    lb.start(1.0)
    try:
        script = scripts(runner)[-1]
        assert "10.0.0.11" in script and "10.0.0.12" in script
    finally:
        lb.stop(1.0)
    assert "delete table ip clusterctl_lb" in scripts(runner)[-1]
    assert not lb.running()


def test_a_backend_failing_fall_checks_leaves_the_map_and_comes_back_after_rise():
    health = {"10.0.0.11": True, "10.0.0.12": True}
    lb, runner, clock = make(health)
    lb.set_backends([A, B])
    lb._check_now(seed=True)
    lb._converge()
    health["10.0.0.12"] = False
    for _ in range(2):  # fall = 2
        clock.t += 1.0
        lb._check_now(only_due=True)
    lb._converge()
    assert [b.node for b in lb.live()] == ["node1"]
    assert "10.0.0.12" not in scripts(runner)[-1]
    health["10.0.0.12"] = True
    for _ in range(2):  # rise = 2
        clock.t += 1.0
        lb._check_now(only_due=True)
    assert [b.node for b in lb.live()] == ["node1", "node2"]


def test_draining_and_zero_weight_backends_get_no_new_connections():
    lb, _, _ = make({"10.0.0.11": True, "10.0.0.12": True})
    drained = Backend("node2", "10.0.0.12", 80, state="draining")
    lb.set_backends([A, drained, Backend("node3", "10.0.0.13", 80, weight=0)])
    lb._check_now(seed=True)
    assert [b.node for b in lb.live()] == ["node1"]
    lb._publish()
    states = {s.node: (s.state, s.in_rotation) for s in lb.stats}
    assert states == {
        "node1": ("active", True),
        "node2": ("draining", False),
        "node3": ("active", False),
    }


def test_monitor_before_start_only_looks():
    lb, runner, _ = make({})
    lb.set_backends([A])
    lb.monitor(1.0)
    assert scripts(runner) == []
    assert runner.calls[-1][0][:3] == ["nft", "-j", "list"]


def test_a_backend_added_while_running_needs_rise_checks_first():
    lb, _, clock = make({"10.0.0.11": True, "10.0.0.12": True})
    lb.set_backends([A])
    lb._check_now(seed=True)
    lb.set_backends([A, B])
    assert [b.node for b in lb.live()] == ["node1"]
    clock.t += 1.0
    lb._check_now(only_due=True)
    assert [b.node for b in lb.live()] == ["node1"]  # 1 of rise = 2
    clock.t += 1.0
    lb._check_now(only_due=True)
    assert [b.node for b in lb.live()] == ["node1", "node2"]


def test_a_backend_dead_at_start_gets_no_traffic():
    lb, _, _ = make({"10.0.0.11": True})
    lb.set_backends([A, B])
    lb._check_now(seed=True)
    assert [b.node for b in lb.live()] == ["node1"]


def test_start_checks_within_its_own_timeout():
    # start() runs in the HA loop, whose lease must be renewed meanwhile: a dead backend
    # must not hold it for the full check_timeout (1 s), past the new holder's deadline.
    timeouts: list[float] = []

    def check(address: str, port: int, path: str, status: int, timeout: float) -> bool:
        timeouts.append(timeout)
        return address == "10.0.0.11"  # node2 is dead: it would take `timeout` to fail

    spec = ResourceSpec("lb", "lb", dict(PARAMS))
    runner = FakeRunner()
    lb = LoadBalancer(spec, runner, check=check, clock=Clock())
    lb.set_backends([A, B])
    lb.start(0.4)
    lb.stop(1.0)
    assert timeouts[:2] == [0.2, 0.2]
    assert [b.node for b in lb.live()] == ["node1"]


def test_stop_does_not_wait_for_a_checker_inside_a_health_check_and_no_rule_comes_back():
    """A fencing holder stops on a deadline: a checker stuck in a slow check must not hold it
    up, and the rules it would converge afterwards must stay gone."""
    import threading
    import time

    armed, entered, release = threading.Event(), threading.Event(), threading.Event()
    runner = FakeRunner()

    def slow_check(address: str, port: int, path: str, status: int, timeout: float) -> bool:
        if armed.is_set():  # the checker's checks, not the start's seed checks
            entered.set()
            release.wait(5)
        return True

    lb = LoadBalancer(ResourceSpec("lb", "lb", {**PARAMS, "inter": 0.01}), runner, check=slow_check)
    lb.set_backends([A, B])
    lb.start(1.0)
    armed.set()
    assert entered.wait(5)
    began = time.monotonic()
    lb.stop(5.0)
    took = time.monotonic() - began
    assert took < 0.5, f"stop waited {took:.2f} s for the checker"
    removed = len(scripts(runner))
    release.set()  # the old checker finishes its check now
    time.sleep(0.1)
    assert len(scripts(runner)) == removed  # and converges nothing: a stop came in between
    assert "delete table ip clusterctl_lb" in scripts(runner)[-1]
