"""A client that asks the VIP every few milliseconds and remembers who answered.

Each request runs in its own thread (so a hung request does not delay the next one) with a
short timeout. The outage around a fault is the time from the last answer before it to the
first answer after it, as a user polling the service would see it.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass, field

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Sample:
    sent: float  # time.monotonic() when the request started
    node: str  # first line of the page (the node that answered), "" on failure

    @property
    def ok(self) -> bool:
        return bool(self.node)


@dataclass
class Prober:
    url: str
    period: float = 0.02
    timeout: float = 0.2
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    def _one(self, sent: float) -> None:
        node = ""
        try:
            with _OPENER.open(self.url, timeout=self.timeout) as resp:
                body = resp.read(256).decode(errors="replace")
                node = body.split("\n", 1)[0].strip() if resp.status == 200 else ""
        except (OSError, ValueError):
            node = ""
        with self._lock:
            self.samples.append(Sample(sent, node))

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            worker = threading.Thread(target=self._one, args=(time.monotonic(),), daemon=True)
            worker.start()
            self._workers.append(worker)
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> Prober:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        for worker in self._workers:
            worker.join(self.timeout + 1)
        with self._lock:
            return sorted(self.samples, key=lambda s: s.sent)

    def __enter__(self) -> Prober:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Outage:
    seconds: float  # last answer before the fault -> first answer after it
    failed: int  # requests that got no answer
    sent: int
    before: str  # node that answered last before the fault
    after: str  # node that answered first after it


def outage(samples: list[Sample], fault_at: float, settle: float = 0.0) -> Outage:
    """The service gap around a fault injected at ``fault_at`` (monotonic seconds).

    With failed requests, the gap is from the last success before the first failure after
    the fault to the first success after that failure. Without any (a planned move), it is
    the largest gap between consecutive answers after the fault.
    """
    ok = [s for s in samples if s.ok]
    failed = [s for s in samples if not s.ok and s.sent >= fault_at - settle]
    before = [s for s in ok if s.sent < fault_at]
    last_before = before[-1] if before else None
    if failed:
        first_fail = failed[0]
        pre = [s for s in ok if s.sent < first_fail.sent]
        post = [s for s in ok if s.sent > first_fail.sent]
        if pre and post:
            gap = post[0].sent - pre[-1].sent
            return Outage(gap, len(failed), len(samples), pre[-1].node, post[0].node)
        return Outage(float("inf"), len(failed), len(samples), "", "")
    after = [s for s in ok if s.sent >= fault_at]
    gaps = [b.sent - a.sent for a, b in zip(after, after[1:], strict=False)]
    if last_before and after:
        gaps.append(after[0].sent - last_before.sent)
    return Outage(
        max(gaps, default=0.0),
        0,
        len(samples),
        last_before.node if last_before else "",
        after[-1].node if after else "",
    )
