"""`clusterctl bench hpc`'s pure parts: Slurm's own failover made from our slurm.conf, its
ping read, and the summary and table of the trials."""

from __future__ import annotations

from clusterctl.bench.hpc import (
    OURS,
    FailoverTrial,
    backup_controller_conf,
    parse_ping,
    summarize,
    table,
)

CONF = """ClusterName=bench
SlurmctldHost=localhost
SlurmctldAddr=10.213.48.100
SlurmctldPort=6817
StateSaveLocation=/srv/clusterctl/shared/slurmctld
"""
PRIMARY, BACKUP = ("node1", "10.213.48.11"), ("node2", "10.213.48.12")


def test_backup_controller_conf_names_both_controllers_and_drops_the_vip() -> None:
    conf = backup_controller_conf(CONF, PRIMARY, BACKUP, 120)
    lines = conf.splitlines()
    assert lines[1:4] == [
        "SlurmctldHost=node1(10.213.48.11)",
        "SlurmctldHost=node2(10.213.48.12)",
        "SlurmctldTimeout=120",
    ]
    assert "SlurmctldAddr" not in conf and "localhost" not in conf
    assert "StateSaveLocation=/srv/clusterctl/shared/slurmctld" in lines  # the same state


def test_backup_controller_conf_applied_twice_changes_only_the_timeout() -> None:
    once = backup_controller_conf(CONF, PRIMARY, BACKUP, 120)
    again = backup_controller_conf(once, PRIMARY, BACKUP, 1)
    assert again == backup_controller_conf(CONF, PRIMARY, BACKUP, 1)
    assert again.count("SlurmctldHost=") == 2 and again.count("SlurmctldTimeout=") == 1


def test_parse_ping() -> None:
    text = (
        "Slurmctld(primary) at node1 is UP\nSlurmctld(backup) at node2 is DOWN\n"
        "*****************************************\n"
    )
    assert parse_ping(text) == {"primary": "UP", "backup": "DOWN"}
    assert parse_ping("scontrol: error: ...") == {}


def trial(mode: str, seconds: float | None, dual: int = 0) -> FailoverTrial:
    return FailoverTrial(mode, 1, "node1", seconds, 10001, dual, 40)


def test_summary_and_table_per_controller() -> None:
    trials = [trial(OURS, s) for s in (1.6, 2.1, 1.9)] + [
        trial("slurm-backup-120s", 125.0),
        trial("slurm-backup-120s", None),
    ]
    rows = summarize(trials)
    assert rows[0] == {
        "mode": OURS, "trials": 3, "answered": 3, "median_s": 1.9, "max_s": 2.1,
        "two_controller_samples": 0, "samples": 120,
    }  # fmt: skip
    assert rows[1]["answered"] == 1 and rows[1]["two_controller_samples"] is None
    result = {
        "failover": {"summary": rows},
        "launch": {"nodes": 4, "median_s": 0.11},
        "primes": [{"nodes": 4, "count": 5_761_455, "median_s": 1.0}],
        "scale_out": {"node": "node4", "scale_s": 50.0, "first_job_s": 52.0},
    }
    text = table(result)
    assert (
        "| clusterctl (group slurm: VIP + slurmctld, fenced) | 3 | 1.90 s | 2.10 s | 0 of 120 |"
        in text
    )
    assert "SlurmctldTimeout=120 | 2 (1 never) | 125.00 s | 125.00 s |" in text
    assert "| primes below 10^8 (= 5,761,455) | 4 | 1.00 s |" in text
