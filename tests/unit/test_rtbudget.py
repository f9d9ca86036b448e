"""The sandbox's real-time budget for etcd members, on a fake cgroup-v1 cpu tree."""

from __future__ import annotations

from pathlib import Path

from clusterctl.providers.rtbudget import NODE_BUDGET_US, PARENT_BUDGET_US, RtBudget
from clusterctl.topology import etcd_member_count, etcd_member_nodes


def cpu_tree(tmp_path: Path, root_us: int = 950_000, parent_us: int | None = 0) -> RtBudget:
    (tmp_path / "cpu.rt_runtime_us").write_text(f"{root_us}\n")
    if parent_us is not None:
        (tmp_path / "libpod_parent").mkdir()
        (tmp_path / "libpod_parent" / "cpu.rt_runtime_us").write_text(f"{parent_us}\n")
    return RtBudget(tmp_path)


def child(budget: RtBudget, name: str, us: int) -> None:
    (budget.parent / name).mkdir()
    (budget.parent / name / "cpu.rt_runtime_us").write_text(f"{us}\n")


def test_no_group_scheduling_means_nothing_to_do(tmp_path) -> None:
    assert RtBudget(tmp_path).supported() is False


def test_the_parent_is_raised_once_and_never_lowered(tmp_path) -> None:
    budget = cpu_tree(tmp_path)
    assert budget.supported()
    assert budget.ensure_parent() == PARENT_BUDGET_US
    (budget.parent / "cpu.rt_runtime_us").write_text("940000\n")  # an operator's own value
    assert budget.ensure_parent() == 940_000


def test_a_missing_parent_is_made_and_the_host_keeps_a_reserve(tmp_path) -> None:
    budget = cpu_tree(tmp_path, root_us=600_000, parent_us=None)
    assert budget.ensure_parent() == 550_000
    assert (tmp_path / "libpod_parent" / "cpu.rt_runtime_us").read_text() == "550000"


def test_free_budget_counts_every_clusters_nodes(tmp_path) -> None:
    budget = cpu_tree(tmp_path)
    budget.ensure_parent()
    for i in range(5):
        child(budget, f"libpod-{i}", NODE_BUDGET_US)
    child(budget, "conmon", 0)
    assert budget.free() == PARENT_BUDGET_US - 5 * NODE_BUDGET_US
    assert budget.free() < NODE_BUDGET_US * 2  # a second 3-node cluster would not fit


def test_members_are_the_first_three_or_five() -> None:
    assert [etcd_member_count(n) for n in (3, 4, 5, 9)] == [3, 3, 5, 5]
    assert etcd_member_nodes(list("abcdef")) == list("abcde")
