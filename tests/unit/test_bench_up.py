"""`clusterctl bench up --nodes ...`'s pure parts: the per-size summary, the least-squares
seconds per extra node, and the table."""

from __future__ import annotations

import pytest

from clusterctl.bench.up import summarize_sizes, table


def test_slope_is_the_least_squares_fit_of_the_medians() -> None:
    # warm medians 20, 26, 38 over 3, 6, 12 nodes: exactly 14 s + 2 s per node
    measurements = {
        6: {"warm": [25.0, 26.0, 30.0], "noop": [3.0]},
        3: {"warm": [20.0], "noop": [2.0]},
        12: {"warm": [38.0, 38.0], "noop": [4.0]},
    }
    summary = summarize_sizes(measurements)
    assert [row["nodes"] for row in summary["sizes"]] == [3, 6, 12]  # sorted by node count
    assert summary["sizes"][1]["warm"] == {
        "runs": 3,
        "min_s": 25.0,
        "median_s": 26.0,
        "max_s": 30.0,
    }
    assert summary["slope_s_per_node"]["warm"] == pytest.approx(2.0)
    assert summary["intercept_s"]["warm"] == pytest.approx(14.0)
    # noop 2, 3, 4: not collinear, the fit's slope is sum((x-x̄)(y-ȳ)) / sum((x-x̄)²)
    assert summary["slope_s_per_node"]["noop"] == pytest.approx(round(9 / 42, 2))  # 0.21


def test_one_size_has_no_slope() -> None:
    summary = summarize_sizes({3: {"warm": [20.0, 22.0], "noop": [2.0, 2.0]}})
    assert summary["slope_s_per_node"] == {"warm": None, "noop": None}
    assert summary["sizes"][0]["warm"]["median_s"] == 21.0


def test_table_has_a_row_per_size_and_the_slope() -> None:
    result = summarize_sizes(
        {3: {"warm": [20.0], "noop": [2.0]}, 6: {"warm": [26.0], "noop": [2.5]}}
    )
    lines = table(result).splitlines()
    assert lines[0].startswith("| nodes | runs | warm `up`")
    assert lines[2] == "| 3 | 1 | 20.0 (20.0-20.0) | 2.0 (2.0-2.0) |"
    assert lines[3] == "| 6 | 1 | 26.0 (26.0-26.0) | 2.5 (2.5-2.5) |"
    assert lines[4] == "| s per extra node (least squares over the medians) | | 2.0 | 0.17 |"


def test_table_without_sizes_is_the_default_benchmarks() -> None:
    result = {"summary": {"warm": {"runs": 1, "min_s": 5.0, "median_s": 5.0, "max_s": 5.0}}}
    assert table(result).splitlines()[2] == "| warm `up` on new containers | 1 | 5.0 / 5.0 / 5.0 |"


def test_table_names_the_sizes_whose_noop_converged_in_full() -> None:
    measurements = {3: {"warm": [20.0], "noop": [30.0]}, 6: {"warm": [26.0], "noop": [2.5]}}
    result = {
        **summarize_sizes(measurements),
        "runs": [
            {"nodes": 3, **measurements[3], "noop_skipped": [False]},
            {"nodes": 6, **measurements[6], "noop_skipped": [True]},
        ],
    }
    assert table(result).splitlines()[-1].startswith("The no-op re-run at 3 nodes converged")
