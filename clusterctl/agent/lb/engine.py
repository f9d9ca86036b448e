"""The one interface of the load balancer's engines, so ``resources/lb.py`` drives either
without knowing which: ``nft`` (kernel full NAT; the agent health-checks the backends and
hands over the healthy ones) and ``haproxy`` (checks its servers itself, gets them all)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from clusterctl.agent.lb.haproxy import HaproxyEngine
from clusterctl.agent.lb.model import Backend, BackendCounters, LbSpec
from clusterctl.agent.lb.nft import NftEngine
from clusterctl.agent.resources.runner import CommandRunner


class LbEngine(Protocol):
    checks_backends: bool
    """True: the engine health-checks its servers itself; False: the agent does, and only
    the healthy backends reach ``converge``'s ``live``."""

    def converge(
        self, spec: LbSpec, registered: Sequence[Backend], live: Sequence[Backend]
    ) -> None:
        """Make the front end match: ``registered`` are every backend in etcd, ``live`` those
        that should get new connections by the agent's view. Raises ``LbError``."""
        ...

    def remove(self, timeout: float | None = None) -> None:
        """Take the front end down (idempotent). Raises ``LbError``."""
        ...

    def in_place(self, timeout: float | None = None) -> bool:
        """Whether the front end is in place on this node now."""
        ...

    def counters(
        self, spec: LbSpec, backends: Sequence[Backend], timeout: float
    ) -> dict[str, BackendCounters]:
        """Per backend node, what the engine counts; raises ``LbError`` or ``OSError`` when
        it can say nothing."""
        ...


def make_engine(spec: LbSpec, runner: CommandRunner) -> LbEngine:
    """The engine ``spec.engine`` names."""
    return NftEngine(runner) if spec.engine == "nft" else HaproxyEngine(runner)
