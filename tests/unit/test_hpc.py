"""The hpc profile's pure parts: Slurm's output parsed, the srun line, the example job's
arithmetic, the job ID keeper's reading of Slurm's state header, the image layer's tag."""

from __future__ import annotations

import importlib.util
import math
import shlex
import struct
import sys
from pathlib import Path

import pytest

from clusterctl.providers import image
from clusterctl.slurm import SlurmStatus, parse_sinfo, parse_squeue, srun_command
from clusterctl.state import ClusterRecord, NodeRecord

REPO = Path(__file__).resolve().parents[2]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


primes = load(REPO / "examples/hpc/primes.py", "primes_example")
job_ids = load(REPO / "roles/slurm/files/slurmctld_job_ids.py", "slurmctld_job_ids")


def test_sinfo_rows_keep_states_and_reasons_once_per_node():
    text = (
        "node1|idle|2|none\nnode2|drained|2|clusterctl drain\nnode2|drained|2|x\n"
        "node3|idle*|2|none\n"
    )
    rows = parse_sinfo(text)
    assert [(n.name, n.state, n.cpus, n.reason) for n in rows] == [
        ("node1", "idle", 2, ""),
        ("node2", "drained", 2, "clusterctl drain"),
        ("node3", "idle*", 2, ""),
    ]


def test_squeue_rows_and_counts():
    jobs = parse_squeue("7|RUNNING|3|node[1-3]|wrap\n8|PENDING|4||my|job\nnoise\n")
    assert [(j.job_id, j.state, j.nodes, j.name) for j in jobs] == [
        (7, "RUNNING", 3, "wrap"),
        (8, "PENDING", 4, "my|job"),
    ]
    status = SlurmStatus.of([], jobs)
    assert (status.running, status.pending) == (1, 1)


def test_the_srun_line_quotes_the_command_and_names_the_job():
    line = srun_command(["python3", "a b.py", "$HOME"], 3, None, "clusterctl-run-1")
    assert shlex.split(line) == [
        "srun", "--nodes=3", "--chdir=/tmp", "--job-name=clusterctl-run-1", "--",
        "python3", "a b.py", "$HOME",
    ]  # fmt: skip
    assert "--ntasks=6" in srun_command(["true"], 3, 6, "x")


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_the_ranks_shares_cover_the_range_once_and_count_right(size):
    n = 10**6
    shares = [primes.share(r, size, n) for r in range(size)]
    assert shares[0][0] == 0 and shares[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(shares, shares[1:], strict=False))
    base = primes.base_primes(math.isqrt(n))
    assert sum(primes.count_primes(lo, hi, base) for lo, hi in shares) == 78_498


def test_small_ranges_count_exactly():
    base = primes.base_primes(10)
    assert primes.count_primes(0, 2, base) == 0
    assert primes.count_primes(0, 3, base) == 1
    assert primes.count_primes(90, 101, base) == 1  # 97
    assert primes.count_primes(0, 100, base) == 25


def job_state_file(directory: Path, sequence: int) -> None:
    version = b"PROTOCOL_VERSION\0"
    header = struct.pack(">I", len(version)) + version + struct.pack(">HqI", 9728, 0, sequence)
    (directory / "job_state").write_bytes(header + b"\0" * 64)


def test_after_a_crash_job_ids_go_on_past_the_saved_sequence(tmp_path):
    job_state_file(tmp_path, 1234)
    floor = tmp_path / "floor.conf"
    assert job_ids.saved_job_id(tmp_path) == 1234
    assert "11234" in job_ids.start(tmp_path, floor, 10_000)
    assert floor.read_text().endswith("FirstJobId=11234\n")


def test_after_a_clean_stop_nothing_is_skipped(tmp_path, monkeypatch):
    job_state_file(tmp_path, 50)
    floor = tmp_path / "floor.conf"
    monkeypatch.setenv("SERVICE_RESULT", "success")
    job_ids.stop(tmp_path)
    assert "cleanly" in job_ids.start(tmp_path, floor, 10_000)
    assert not floor.exists()
    # the mark is used up: the next start (say after a crash) skips again
    assert "10050" in job_ids.start(tmp_path, floor, 10_000)


def test_a_killed_controller_leaves_no_clean_mark_and_a_first_start_skips_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SERVICE_RESULT", "signal")
    job_ids.stop(tmp_path)
    assert not (tmp_path / job_ids.CLEAN_STOP).exists()
    assert "nothing to skip" in job_ids.start(tmp_path, tmp_path / "floor.conf", 10_000)


def test_the_hpc_layer_is_its_own_image_tagged_by_its_recipe():
    assert image.image_name("hpc").startswith(f"{image.IMAGE_REPO}-hpc:")
    assert image.image_name("lb") == image.image_name() == image.image_name(None)
    assert image.layer_hash("hpc") != image.recipe_hash()


def test_etcd_members_are_pinned_when_recorded():
    nodes = [NodeRecord(f"node{i}", f"10.0.0.{i}") for i in range(1, 6)]
    legacy = ClusterRecord("c", "podman", nodes=nodes[:4])
    assert legacy.etcd_member_names() == ["node1", "node2", "node3"]
    pinned = ClusterRecord("c", "podman", nodes=nodes, etcd_members=["node1", "node2", "node3"])
    assert pinned.etcd_member_names() == ["node1", "node2", "node3"]
    assert ClusterRecord.from_json(pinned.to_json()).etcd_members == pinned.etcd_members
