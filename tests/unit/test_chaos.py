"""`clusterctl chaos`: its checks and its report, on recorded samples (the run itself is
tested on real sandbox nodes in tests/integration/test_chaos.py)."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from clusterctl.agent.history import HistoryEntry
from clusterctl.bench.prober import Sample
from clusterctl.chaos import (
    ChaosOptions,
    ChaosReport,
    FaultRecord,
    check_options,
    default_faults,
    holder_changes,
    longest_gap,
    lost,
    missing_in_history,
)
from clusterctl.errors import ClusterctlError
from clusterctl.state import ClusterRecord, NodeRecord
from clusterctl.timeline import render_timeline


def record(profile: str = "lb", provider: str = "podman") -> ClusterRecord:
    nodes = [NodeRecord(f"node{i}", f"10.0.0.{10 + i}") for i in (1, 2, 3)]
    return ClusterRecord(name="demo", provider=provider, nodes=nodes, profile=profile)


def acquired(*nodes: str) -> list[HistoryEntry]:
    return [HistoryEntry(float(i), n, "acquired", "web", "x") for i, n in enumerate(nodes)]


def test_holder_changes_are_the_successive_single_holders() -> None:
    samples = [
        (0.0, ("node1",)),
        (0.1, ("node1",)),
        (0.2, ()),
        (0.3, ("node2",)),
        (0.4, ("node2", "node3")),  # a two-holder sample is not a change of holder
        (0.5, ("node2",)),
        (0.6, ("node1",)),
    ]
    assert holder_changes(samples) == ["node2", "node1"]


def test_every_change_needs_an_acquired_entry_in_order() -> None:
    assert missing_in_history(["node2", "node1"], acquired("node1", "node2", "node1")) == []
    # entries the samples did not see (a quick take-over) are fine; a change without one is not
    assert missing_in_history(["node2"], acquired("node3", "node2")) == []
    assert missing_in_history(["node2", "node3"], acquired("node3", "node2")) == [
        "no 'acquired' entry for node3 taking over"
    ]


def test_lost_configuration_names_what_changed() -> None:
    before = {
        "backends": {"node1": (1, "active"), "node2": (3, "draining")},
        "bans": {"web": ["node3"]},
        "standby": ["node2"],
    }
    assert lost(before, before) == []
    after = {
        "backends": {"node1": (1, "active")},
        "bans": {"web": []},
        "standby": [],
    }
    found = lost(before, after)
    assert found == [
        "backend node2 was weight 3 draining, now gone",
        "bans of web were ['node3'], now []",
        "standby nodes were ['node2'], now []",
    ]


@pytest.mark.parametrize(
    ("options", "rec", "message"),
    [
        (ChaosOptions("demo", faults=("crash", "meteor")), record(), "unknown fault 'meteor'"),
        (ChaosOptions("demo", faults=()), record(), "no faults given"),
        (ChaosOptions("demo", duration=0), record(), "--duration 0 is out of range"),
        (ChaosOptions("demo", rate=0), record(), "--rate 0 is out of range"),
        (ChaosOptions("demo"), record(provider="ssh"), "runs on the ssh provider"),
        (ChaosOptions("demo"), record(profile="web"), "no VIP to fail over"),
        (ChaosOptions("demo", faults=("backend-kill",)), record("ha"), "needs the lb profile"),
    ],
)
def test_bad_options_are_one_line_each(options, rec, message) -> None:
    with pytest.raises(ClusterctlError) as err:
        check_options(options, rec)
    assert message in err.value.message and "\n" not in err.value.message
    assert err.value.hint


def test_default_faults_follow_the_profile() -> None:
    assert "backend-kill" in default_faults(record("lb"))
    assert "backend-kill" not in default_faults(record("ha"))
    check_options(ChaosOptions("demo"), record("ha"))  # the default is valid on ha


def report(**changes) -> ChaosReport:
    base = ChaosReport("demo", "lb", 7, 60.0, converged=True, converge_s=3.0)
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_the_verdict_fails_on_any_violation() -> None:
    assert report().verdict == "PASS"
    assert report(dual_holder_samples=1).verdict == "FAIL"
    assert report(lost_configuration=["x"]).verdict == "FAIL"
    assert report(converged=False).verdict == "FAIL"
    assert report(history_missing=["y"]).verdict == "FAIL"
    assert "1 samples with two VIP holders" in report(dual_holder_samples=1).to_table()


def test_per_kind_summary_and_timeline_picture() -> None:
    faults = [
        FaultRecord("crash", "node1", 2.0, 5.0, 8.0, "node1", "node2", 1.2, 40),
        FaultRecord("crash", "node2", 12.0, 14.0, 16.0, "node2", "node3", 1.6, 60),
        FaultRecord("partition", "node3", 20.0, 22.0, 23.0, "node3", "node1", 1.0, 30),
    ]
    rep = report(faults=faults, requests=100, failed_requests=2)
    rows = {r["fault"]: r for r in rep.per_kind()}
    assert rows["crash"]["injected"] == 2 and rows["crash"]["outage_median_s"] == 1.4
    assert rows["crash"]["outage_max_s"] == 1.6 and rows["crash"]["failed_requests"] == 100
    samples = [Sample(100.0 + i * 0.02, "node1" if i % 50 else "") for i in range(1500)]
    holders = [(100.0 + i * 0.05, ("node1",) if i < 300 else ("node2",)) for i in range(600)]
    svg = render_timeline(rep, samples, holders, 100.0)
    root = ElementTree.fromstring(svg)  # well-formed
    assert root.tag.endswith("svg")
    assert svg.count("<title>") == 3  # one band per fault, with its outage
    assert "#d62728" in svg  # failed requests drawn in red


def test_the_outage_is_the_longest_time_without_an_answer() -> None:
    answered = [Sample(t / 10, "node1") for t in range(0, 100)]
    crash = [s for s in answered if not 30 <= s.sent * 10 < 42]  # 1.2 s of nothing
    failing = [*crash, *(Sample(t / 10 + 0.05, "") for t in range(30, 42))]
    assert longest_gap(sorted(failing, key=lambda s: s.sent), 3.0, 6.0) == pytest.approx(1.3)
    # one backend of three failing: answers keep coming, the gap stays one period
    interleaved = [Sample(t / 10, "" if t % 3 == 0 else "node2") for t in range(100)]
    assert longest_gap(interleaved, 3.0, 6.0) == pytest.approx(0.2)
