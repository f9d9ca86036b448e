"""`clusterctl bench scale`'s pure parts: etcd's /metrics read into requests per second,
percentiles, the table; and its agents' side on the in-memory store (the no-op resource,
the fencing sentence it counts, the renewal instrumentation)."""

from __future__ import annotations

import math

import pytest
import yaml

from clusterctl.agent.clock import FakeClock
from clusterctl.agent.ha import Agent
from clusterctl.agent.store.memory import MemoryBackend, MemoryStore
from clusterctl.bench import scale
from clusterctl.paths import PROJECT_ROOT

METRICS = """# HELP grpc_server_handled_total Total number of RPCs completed on the server.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 120
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3
grpc_server_handled_total{grpc_code="OK",grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 40
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 2
grpc_server_handled_total{grpc_code="OK",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 1
grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 0
grpc_server_handled_totally_different{grpc_method="Range"} 999
grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 124
grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 4
grpc_server_msg_sent_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 50
etcd_server_has_leader 1
"""  # noqa: E501 (etcd's own lines)


def later(text: str, **added: float) -> str:
    """``METRICS`` with each named method's OK handled count (or Watch's started/sent) raised."""
    out = []
    for line in text.splitlines():
        for method, more in added.items():
            if f'grpc_method="{method}"' in line and 'grpc_code="OK"' in line:
                name, value = line.rsplit(" ", 1)
                line = f"{name} {float(value) + more:g}"
            if method == "Watch" and 'grpc_method="Watch"' in line and "_total{grpc_method" in line:
                name, value = line.rsplit(" ", 1)
                line = f"{name} {float(value) + more:g}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_request_counts_sum_every_code_and_count_watch_streams_opened() -> None:
    counts = scale.request_counts(METRICS)
    assert counts["Range"] == 123  # OK and Unavailable
    assert counts["LeaseKeepAlive"] == 40
    assert counts["Watch"] == 4  # opened, not handled (a stream is handled when it ends)
    assert counts["WatchMessages"] == 50
    assert counts["Put"] == 0
    assert "etcd_server_has_leader" not in counts


def test_parse_samples_reads_labels_with_escapes_and_skips_other_metrics() -> None:
    text = 'm{a="x\\"y",b="2"} 3.5\nm_other{a="z"} 1\n# m{a="c"} 9\nm 7\n'
    assert scale.parse_samples(text, "m") == [({"a": 'x\\"y', "b": "2"}, 3.5), ({}, 7.0)]
    assert scale.counter_by(text, "m", "b") == {"2": 3.5}


def test_request_rates_are_deltas_summed_over_members_per_second() -> None:
    before = [METRICS, METRICS, METRICS]
    after = [
        later(METRICS, Range=100, LeaseKeepAlive=20),
        later(METRICS, Range=50),
        later(METRICS, Watch=10),
    ]
    rates = scale.request_rates(before, after, seconds=10.0)
    assert rates["Range"] == 15.0
    assert rates["LeaseKeepAlive"] == 2.0
    assert rates["Watch"] == 1.0 and rates["WatchMessages"] == 1.0
    assert "Txn" not in rates and "Put" not in rates  # nothing happened: left out
    assert rates["total"] == 18.0  # messages on watch streams are not requests
    with pytest.raises(ValueError):
        scale.request_rates(before, after[:2], 10.0)


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert scale.percentile(values, 50) == pytest.approx(50.5)
    assert scale.percentile(values, 99) == pytest.approx(99.01)
    assert scale.percentile(values, 100) == 100.0
    assert scale.percentile([0.2, 0.1], 0) == 0.1
    assert scale.percentile([3.0], 99) == 3.0
    assert math.isnan(scale.percentile([], 50))
    with pytest.raises(ValueError):
        scale.percentile(values, 101)


def test_latency_summary_in_milliseconds() -> None:
    summary = scale.latency_summary([0.002, 0.004, 0.003, 0.1])
    assert summary == {"count": 4, "p50_ms": 3.5, "p99_ms": 97.1, "max_ms": 100.0}
    assert scale.latency_summary([]) == {
        "count": 0,
        "p50_ms": None,
        "p99_ms": None,
        "max_ms": None,
    }


def row(**overrides: object) -> dict:
    base = {
        "agents": 10,
        "etcd_cores": 0.153,
        "etcd_rss_mb": 41.6,
        "requests_per_s": {"Range": 100.4, "LeaseKeepAlive": 60.0, "Status": 2.0, "total": 162.4},
        "renewal": {"count": 900, "p50_ms": 3.1, "p99_ms": 15.3, "max_ms": 20.0},
        "renewal_failures": 0,
        "fencings": 0,
        "failover_s": 1.234,
        "agent_cores": 0.2,
        "agent_steps_per_s": 9.96,
    }
    return {**base, **overrides}


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_table_one_row_per_run_with_every_column() -> None:
    text = scale.table(
        [
            row(),
            row(agents=50, failover_s=None, renewal={"count": 0, "p50_ms": None, "p99_ms": None}),
            {"agents": 500, "error": "500 agents registered: not within 80 s"},
        ]
    )
    header, rule, ten, fifty, broken = text.splitlines()
    names = cells(header)
    assert len(cells(rule)) == len(names) == len(cells(ten)) == len(cells(broken))
    values = dict(zip(names, cells(ten), strict=True))
    assert values["agents"] == "10"
    assert values["etcd CPU (cores)"] == "0.15"
    assert values["requests/s"] == "162"
    assert values["Range"] == "100" and values["LeaseKeepAlive"] == "60" and values["Txn"] == "0"
    assert values["other"] == "2"  # Status
    assert values["renewal p50 / p99 (ms)"] == "3.1 / 15.3"
    assert values["failover (s)"] == "1.23"
    assert values["steps/s per agent"] == "10.0"
    fifty_values = dict(zip(names, cells(fifty), strict=True))
    assert fifty_values["failover (s)"].startswith("none in")
    assert fifty_values["renewal p50 / p99 (ms)"] == "- / -"
    assert cells(broken)[0] == "500" and cells(broken)[-1].startswith("broke: 500 agents")


def test_etcd_flags_are_the_roles() -> None:
    defaults = yaml.safe_load((PROJECT_ROOT / "roles/etcd/defaults/main.yml").read_text())
    assert defaults["etcd_heartbeat_interval_ms"] == scale.HEARTBEAT_MS
    assert defaults["etcd_election_timeout_ms"] == scale.ELECTION_MS


def test_unknown_reads_mode_is_one_line() -> None:
    with pytest.raises(scale.BenchError, match="unknown reads mode"):
        scale.check_reads("poll")
    scale.check_reads("direct")


def test_null_runner_remembers_units() -> None:
    runner = scale.NullRunner()
    unit = "clusterctl-bench.service"
    assert runner.run(["systemctl", "is-active", "--quiet", unit], 1.0).rc == 3
    assert runner.run(["systemctl", "start", unit], 1.0).ok
    assert runner.run(["systemctl", "is-active", "--quiet", unit], 1.0).ok
    assert runner.run(["systemctl", "stop", unit], 1.0).ok
    assert runner.run(["systemctl", "is-active", "--quiet", unit], 1.0).rc == 3
    assert runner.set_address("eth0", "10.0.0.1/24", 1, 1.0).ok
    assert runner.address_owner("eth0", "10.0.0.1") is None


def test_bench_agent_acquires_renews_and_its_fencing_is_counted() -> None:
    """The agent the bench runs, on the in-memory store: it takes the group with the no-op
    resource, its renewals are recorded, a failed one counted, and its fencing sentence is
    the one the bench counts (``FENCE_MARK``)."""
    clock = FakeClock()
    backend = MemoryBackend(clock)
    config = scale.bench_config("node1", "scale1-2", ["http://127.0.0.1:2379"])
    assert config.lease_ttl == 1.0 and config.api_port == 0
    runner = scale.NullRunner()
    agent = Agent(config, MemoryStore(backend, "node1"), clock, runner)
    recorder = scale.Recorder()
    scale._instrument(agent, recorder)
    assert agent.startup_cleanup() == "start-up cleanup: nothing was running"
    for _ in range(30):
        sentence = agent.step()
        clock.advance(max(0.0, agent.next_wakeup() - clock.now()))
    assert agent.holding() == [scale.GROUP], sentence
    assert runner.units == {"clusterctl-bench.service"}
    assert recorder.renewals and all(latency == 0 for _, latency in recorder.renewals)
    backend.partition("node1")
    failed = None
    for _ in range(30):
        sentence = agent.step()
        if scale.FENCE_MARK in sentence:
            failed = sentence
            break
        clock.advance(max(0.0, agent.next_wakeup() - clock.now()))
    assert failed is not None and failed.endswith(f"fencing: stopped {scale.GROUP}")
    assert recorder.renew_failures
    assert runner.units == set()
    recorder.stepped("node1", failed)
    report = recorder.report(float("-inf"), float("inf"))
    assert len(report["fencings"]) == 1 and report["renew_failures"] >= 1
