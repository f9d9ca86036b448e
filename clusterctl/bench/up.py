"""`clusterctl bench up`: how long building a sandbox takes.

cold: the node image (and the profile's layer, if it has one) is built first, then a new
cluster converged;
warm: a new cluster from the cached image; noop: `up` again on a converged cluster (each node
compared with its last converge, clusterctl/convergence.py); noop_full: `up --full` there,
the whole converge changing nothing.

With sizes (`--nodes 3 --nodes 6 --nodes 12`): for each node count a warm `up` of a new
cluster and a no-op re-run, the cluster removed between sizes; the result adds the least-squares
slope of the medians over the node count, the seconds each extra node costs.
"""

from __future__ import annotations

import configparser
import os
import statistics
import time
from collections.abc import Sequence

from clusterctl import cluster as api
from clusterctl.paths import ANSIBLE_CFG
from clusterctl.providers.image import ensure_profile_image, image_name
from clusterctl.providers.podman_cli import Podman
from clusterctl.reporter import ListReporter, Reporter
from clusterctl.state import state_root


def _timed_up(
    cluster: str,
    profile: str,
    full: bool = False,
    said: Reporter | None = None,
    nodes: int | None = None,
) -> tuple[float, int, bool]:
    """Seconds and changed tasks of one `up`, and whether it skipped the converge (every node
    matched its last one); what it said of drift goes to ``said``."""
    started = time.monotonic()
    options = api.UpOptions(cluster=cluster, profile=profile, full=full, nodes=nodes)
    heard = ListReporter()
    result = api.up(options, heard)
    changed = result.playbook.changed if result.playbook else -1
    for kind, message in heard.messages:
        if said is not None and kind == "info" and "since the last converge" in message:
            said.info(f"  {message}")
    skipped = result.playbook is not None and result.playbook.playbook == api.DIGEST_PLAYBOOK
    return time.monotonic() - started, changed, skipped


def run(
    cluster: str,
    trials: int,
    cold: bool,
    profile: str,
    reporter: Reporter,
    sizes: Sequence[int] | None = None,
) -> dict:
    """The benchmark; the cluster is removed afterwards, also when a step fails."""
    try:
        if sizes:
            return _run_sizes(cluster, trials, cold, profile, reporter, sizes)
        return _run_default(cluster, trials, cold, profile, reporter)
    finally:
        api.down(cluster, ListReporter())


def _run_default(cluster: str, trials: int, cold: bool, profile: str, reporter: Reporter) -> dict:
    podman = Podman(state_root())
    measurements: dict[str, list[float]] = {"cold": [], "warm": [], "noop": [], "noop_full": []}
    api.down(cluster, ListReporter())
    if cold:
        images = list(dict.fromkeys([image_name(profile), image_name()]))  # layer, then base
        reporter.info(f"cold: removing the cached image(s) {', '.join(images)} first")
        podman.run("image", "rm", "-f", *images, check=False)
        seconds, _, _ = _timed_up(cluster, profile)
        measurements["cold"].append(seconds)
        reporter.info(f"cold up: {seconds:.1f} s")
        api.down(cluster, ListReporter())
    for number in range(1, trials + 1):
        seconds, _, _ = _timed_up(cluster, profile)
        measurements["warm"].append(seconds)
        noop, changed, _ = _timed_up(cluster, profile, said=reporter)
        measurements["noop"].append(noop)
        full, full_changed, _ = _timed_up(cluster, profile, full=True)
        measurements["noop_full"].append(full)
        reporter.info(f"trial {number}: warm up {seconds:.1f} s, no-op re-run {noop:.1f} s "
                      f"(changed={changed}), with --full {full:.1f} s "
                      f"(changed={full_changed})")  # fmt: skip
        api.down(cluster, ListReporter())
    summary = {
        name: {
            "runs": len(values),
            "min_s": round(min(values), 1),
            "median_s": round(statistics.median(values), 1),
            "max_s": round(max(values), 1),
        }
        for name, values in measurements.items()
        if values
    }
    return {
        "benchmark": "up",
        "profile": profile,
        "nodes": 3,
        "summary": summary,
        "runs": measurements,
    }


def _run_sizes(
    cluster: str,
    trials: int,
    cold: bool,
    profile: str,
    reporter: Reporter,
    sizes: Sequence[int],
) -> dict:
    podman = Podman(state_root())
    api.down(cluster, ListReporter())
    if cold:
        images = list(dict.fromkeys([image_name(profile), image_name()]))
        reporter.info(f"removing the cached image(s) {', '.join(images)} first")
        podman.run("image", "rm", "-f", *images, check=False)
    cold_s = None
    if not podman.image_exists(image_name(profile)):  # warm means from the cached image
        started = time.monotonic()
        ensure_profile_image(podman, reporter, profile)
        cold_s = time.monotonic() - started
        reporter.info(f"node image built in {cold_s:.1f} s (not part of the sizes)")
    measurements: dict[int, dict[str, list[float]]] = {}
    # per size: the no-op's changed tasks, whether it skipped the converge (it does not when
    # the inputs changed meanwhile, e.g. the repository's roles or agent sources were edited),
    # and the host's 1-minute load average before the warm `up` (other work skews the times)
    notes: dict[int, dict[str, list]] = {}
    for nodes in sizes:
        runs = measurements.setdefault(nodes, {"warm": [], "noop": []})
        note = notes.setdefault(nodes, {"noop_changed": [], "noop_skipped": [], "load1": []})
        for number in range(1, trials + 1):
            note["load1"].append(round(os.getloadavg()[0], 2))
            warm, _, _ = _timed_up(cluster, profile, nodes=nodes)
            runs["warm"].append(warm)
            noop, noop_changed, skipped = _timed_up(cluster, profile, said=reporter, nodes=nodes)
            runs["noop"].append(noop)
            note["noop_changed"].append(noop_changed)
            note["noop_skipped"].append(skipped)
            if not skipped:
                reporter.warn(
                    f"{nodes} nodes, trial {number}: the no-op re-run converged in full (its "
                    "inputs changed since the warm `up`: repository or state edited meanwhile?)"
                )
            reporter.info(f"{nodes} nodes, trial {number}: warm up {warm:.1f} s, no-op re-run "
                          f"{noop:.1f} s (changed={noop_changed})")  # fmt: skip
            api.down(cluster, ListReporter())
    result = {
        "benchmark": "up",
        "profile": profile,
        "nodes": list(measurements),
        "ansible_forks": ansible_forks(),
        **summarize_sizes(measurements),
        "runs": [{"nodes": n, **runs, **notes[n]} for n, runs in measurements.items()],
    }
    if cold_s is not None:
        result["image_build_s"] = round(cold_s, 1)
    return result


def ansible_forks() -> int:
    """The forks of clusterctl's ansible.cfg (Ansible's own default is 5)."""
    config = configparser.ConfigParser()
    config.read(ANSIBLE_CFG)
    return config.getint("defaults", "forks", fallback=5)


def _stats(values: Sequence[float]) -> dict:
    return {
        "runs": len(values),
        "min_s": round(min(values), 1),
        "median_s": round(statistics.median(values), 1),
        "max_s": round(max(values), 1),
    }


def summarize_sizes(measurements: dict[int, dict[str, list[float]]]) -> dict:
    """Per node count the runs' min / median / max of each step, and per step the
    least-squares slope of the medians over the node count (seconds per extra node) and its
    intercept; the slope is None with fewer than two node counts."""
    sizes = sorted(n for n, runs in measurements.items() if any(runs.values()))
    steps = list(dict.fromkeys(step for n in sizes for step in measurements[n]))
    rows = [
        {"nodes": n, **{step: _stats(v) for step, v in measurements[n].items() if v}} for n in sizes
    ]
    slope: dict[str, float | None] = {}
    intercept: dict[str, float | None] = {}
    for step in steps:
        points = [(n, statistics.median(measurements[n][step])) for n in sizes
                  if measurements[n].get(step)]  # fmt: skip
        if len({n for n, _ in points}) < 2:
            slope[step] = intercept[step] = None
            continue
        fit = statistics.linear_regression([n for n, _ in points], [s for _, s in points])
        slope[step], intercept[step] = round(fit.slope, 2), round(fit.intercept, 1)
    return {"sizes": rows, "slope_s_per_node": slope, "intercept_s": intercept}


def _sizes_table(result: dict) -> str:
    steps = list(result["slope_s_per_node"])
    labels = {"warm": "warm `up` on new containers", "noop": "no-op re-run of `up`"}
    header = " | ".join(f"{labels.get(step, step)}: median (min-max) s" for step in steps)
    lines = [f"| nodes | runs | {header} |", "|---|---|" + "---|" * len(steps)]
    for row in result["sizes"]:
        runs = max(row[step]["runs"] for step in steps if step in row)
        cells = " | ".join(
            f"{row[s]['median_s']} ({row[s]['min_s']}-{row[s]['max_s']})" if s in row else "-"
            for s in steps
        )
        lines.append(f"| {row['nodes']} | {runs} | {cells} |")
    slopes = " | ".join(
        "-" if result["slope_s_per_node"][s] is None else f"{result['slope_s_per_node'][s]}"
        for s in steps
    )
    lines.append(f"| s per extra node (least squares over the medians) | | {slopes} |")
    full = [str(run["nodes"]) for run in result.get("runs", []) if not all(run["noop_skipped"])]
    if full:
        lines.append(
            f"\nThe no-op re-run at {', '.join(full)} nodes converged in full: its inputs had "
            "changed since the warm `up`."
        )
    return "\n".join(lines)


def table(result: dict) -> str:
    if "sizes" in result:
        return _sizes_table(result)
    labels = {
        "cold": "cold `up` (node image built first)",
        "warm": "warm `up` on new containers",
        "noop": "no-op re-run of `up` (nodes compared with their last converge)",
        "noop_full": "no-op `up --full` (the whole converge)",
    }
    lines = ["| step | runs | min / median / max (s) |", "|---|---|---|"]
    for name, row in result["summary"].items():
        lines.append(
            f"| {labels[name]} | {row['runs']} | {row['min_s']} / {row['median_s']} / "
            f"{row['max_s']} |"
        )
    return "\n".join(lines)
