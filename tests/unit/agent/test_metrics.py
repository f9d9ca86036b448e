"""Metrics: the agent's counters and the Prometheus text rendering."""

from __future__ import annotations

import re
import threading

from clusterctl.agent.metrics import RENEW_BUCKETS, GroupState, Metrics, render

from .agentsim import Sim

_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(
    rf"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{(?P<labels>{_LABEL}(?:,{_LABEL})*)\}})? "
    r"(?P<value>[+-]?(?:[0-9.]+(?:[eE][+-]?[0-9]+)?|Inf)|NaN)$"
)
_COMMENT = re.compile(
    r"^# (?:HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE \S+ (counter|gauge|histogram))$"
)


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Parse the exposition back; fail on any line that is neither a sample nor HELP/TYPE.
    Returns {(name, labels): value}."""
    assert text.endswith("\n")
    samples: dict[tuple[str, frozenset], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("#"):
            assert _COMMENT.match(line), line
            if line.startswith("# TYPE "):
                typed.add(line.split()[2])
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        family = re.sub(r"_(bucket|sum|count)$", "", match["name"])
        assert match["name"] in typed or family in typed, f"no TYPE before {line!r}"
        labels = frozenset(
            re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match["labels"] or "")
        )
        key = (match["name"], labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(match["value"])
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    wanted = {(k, v) for k, v in labels.items()}
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_render_parses_back() -> None:
    metrics = Metrics()
    metrics.acquired("web")
    metrics.acquired("web")
    metrics.fenced()
    for seconds in (0.002, 0.02, 0.3, 5.0):
        metrics.observe_renewal(seconds)
    text = render(
        cluster="demo",
        node='no"de\\1',
        counters=metrics.snapshot(),
        groups=[
            GroupState("web", "node2", False, (("node1", 2), ("node2", 0))),
            GroupState("db", None, False),
        ],
        lease_time_left=0.55,
        members_online=3,
        quorum=True,
    )
    samples = parse(text)
    common = {"cluster": "demo", "node": 'no\\"de\\\\1'}
    assert value(samples, "clusterctl_group_holder", group="web", holder="node2", **common) == 1
    assert not [k for k in samples if k[0] == "clusterctl_group_holder" and ("group", "db") in k[1]]
    assert value(samples, "clusterctl_group_running", group="db") == 0
    assert value(samples, "clusterctl_failovers_total", group="web") == 2
    assert value(samples, "clusterctl_failovers_total", group="db") == 0
    assert value(samples, "clusterctl_fencings_total") == 1
    assert value(samples, "clusterctl_group_failcount", group="web", on="node1") == 2
    assert value(samples, "clusterctl_lease_time_left_seconds") == 0.55
    assert value(samples, "clusterctl_members_online") == 3
    assert value(samples, "clusterctl_quorum") == 1
    buckets = [
        value(samples, "clusterctl_lease_renew_seconds_bucket", le=str(b)) for b in RENEW_BUCKETS
    ]
    assert buckets == sorted(buckets) and buckets[0] == 1 and buckets[-1] == 3
    assert value(samples, "clusterctl_lease_renew_seconds_bucket", le="+Inf") == 4
    assert value(samples, "clusterctl_lease_renew_seconds_count") == 4
    assert abs(value(samples, "clusterctl_lease_renew_seconds_sum") - 5.322) < 1e-9
    for (_, labels), _v in samples.items():
        assert {"cluster", "node"} <= {k for k, _ in labels}


def test_counters_are_thread_safe() -> None:
    metrics = Metrics()

    def work() -> None:
        for _ in range(2000):
            metrics.acquired("web")
            metrics.observe_renewal(0.01)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    snap = metrics.snapshot()
    assert snap.acquisitions == {"web": 8000} and snap.renew_count == 8000


def test_agent_counts_acquisitions_renewals_and_fencings(sim: Sim) -> None:
    sim.run(1.0)
    (node,) = sim.vip_on()
    counters = sim.agents[node].metrics.snapshot()
    assert counters.acquisitions == {"web": 1} and counters.fencings == 0
    assert counters.renew_count >= 3  # every 0.2 s
    sim.partition(node)
    sim.run(1.0)
    assert sim.agents[node].metrics.snapshot().fencings == 1
    (new,) = sim.vip_on()
    assert sim.agents[new].metrics.snapshot().acquisitions == {"web": 1}
