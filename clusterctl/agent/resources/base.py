"""The abstract resource: something the agent starts, stops and monitors on one node."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from clusterctl.agent.config import ResourceSpec
from clusterctl.agent.resources.runner import CommandResult, CommandRunner


class ResourceError(Exception):
    """A start or stop did not succeed. The message is one line for the step sentence."""


@dataclass(frozen=True)
class MigrationStatus:
    """Where a live migration stands: ``state`` is qemu's (active, completed, failed, ...);
    the times in milliseconds once it completed."""

    state: str
    total_ms: int | None = None
    downtime_ms: int | None = None
    error: str = ""  # why it failed, in qemu's words

    @property
    def summary(self) -> str:
        """The state, with the reason when there is one: "failed (Connection refused)"."""
        return f"{self.state} ({self.error})" if self.error else self.state

    @property
    def done(self) -> bool:
        return self.state == "completed"

    @property
    def failed(self) -> bool:
        return self.state in ("failed", "cancelled", "none")


class Resource(ABC):
    """A managed resource.

    Contract: ``start`` and ``stop`` are idempotent (starting a running resource or stopping a
    stopped one succeeds) and raise ``ResourceError`` on failure; ``monitor`` returns whether
    the resource is running and healthy and never raises. Each call returns within
    ``timeout`` seconds (the agent lowers it near its fencing deadline).

    ``exclusive``: must never run on two nodes at once (a VIP, a database): it is only started
    after the group's leader key is won, and stopped before it is released.
    ``prestart_safe``: may run on several nodes at once (a stateless web server), so the target
    of a planned move may start it before the holder stops (make-before-break).
    """

    def __init__(self, spec: ResourceSpec, runner: CommandRunner) -> None:
        self.spec = spec
        self.runner = runner

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def exclusive(self) -> bool:
        return self.spec.is_exclusive

    @property
    def prestart_safe(self) -> bool:
        return self.spec.prestart_safe and not self.exclusive

    @abstractmethod
    def start(self, timeout: float) -> None: ...

    @abstractmethod
    def stop(self, timeout: float) -> None: ...

    @abstractmethod
    def monitor(self, timeout: float) -> bool: ...

    @property
    def migratable(self) -> bool:
        return self.spec.is_migratable

    # Live migration (``migratable`` resources only; the others never get these calls). A
    # planned move: the target prepares (``prepare_incoming``: waits, paused, for the state),
    # the holder sends (``migrate_begin``, then ``migrate_status`` every step until it says
    # completed or failed), then stops its paused copy and releases; the target acquires and
    # ``start`` resumes the copy that came in. Each call is bounded by ``timeout`` and
    # raises ``ResourceError`` on failure.
    def prepare_incoming(self, timeout: float) -> None:
        raise ResourceError(f"{self.name} cannot migrate")

    def migrate_begin(self, address: str, timeout: float) -> None:
        raise ResourceError(f"{self.name} cannot migrate")

    def migrate_status(self, timeout: float) -> MigrationStatus:
        raise ResourceError(f"{self.name} cannot migrate")

    def migrate_cancel(self, timeout: float) -> None:  # noqa: B027 - optional hook
        """Abandon a migration in flight (the holder's copy runs on)."""

    def state_note(self) -> str | None:
        """A word on how the resource itself is (a guest's "running" or "booting"), as it
        last saw it: read by the API thread, so no I/O. None: nothing beyond started."""
        return None

    def keepalive(self, timeout: float) -> None:  # noqa: B027 - optional hook, no-op default
        """Called on the holder after every successful lease renewal (e.g. to extend a VIP's
        kernel lifetime). Raises ``ResourceError`` on failure; the default does nothing."""

    def _run(self, argv: list[str], timeout: float) -> CommandResult:
        return self.runner.run(argv, timeout=max(timeout, 0.01))

    def _check(self, argv: list[str], timeout: float) -> None:
        result = self._run(argv, timeout)
        if not result.ok:
            detail = (result.stderr or result.stdout).strip().splitlines()
            tail = detail[-1] if detail else ""
            raise ResourceError(f"{' '.join(argv)} failed (rc {result.rc}) {tail}".strip())
