"""`clusterctl bench up`: how long building a sandbox takes.

cold: the node image (and the profile's layer, if it has one) is built first, then a new
cluster converged;
warm: a new cluster from the cached image; noop: `up` again on a converged cluster (each node
compared with its last converge, clusterctl/convergence.py); noop_full: `up --full` there,
the whole converge changing nothing.
"""

from __future__ import annotations

import statistics
import time

from clusterctl import cluster as api
from clusterctl.providers.image import image_name
from clusterctl.providers.podman_cli import Podman
from clusterctl.reporter import ListReporter, Reporter
from clusterctl.state import state_root


def _timed_up(
    cluster: str, profile: str, full: bool = False, said: Reporter | None = None
) -> tuple[float, int]:
    """Seconds and changed tasks of one `up`; what it said of drift goes to ``said``."""
    started = time.monotonic()
    options = api.UpOptions(cluster=cluster, profile=profile, full=full)
    heard = ListReporter()
    result = api.up(options, heard)
    changed = result.playbook.changed if result.playbook else -1
    for kind, message in heard.messages:
        if said is not None and kind == "info" and "since the last converge" in message:
            said.info(f"  {message}")
    return time.monotonic() - started, changed


def run(cluster: str, trials: int, cold: bool, profile: str, reporter: Reporter) -> dict:
    podman = Podman(state_root())
    measurements: dict[str, list[float]] = {"cold": [], "warm": [], "noop": [], "noop_full": []}
    api.down(cluster, ListReporter())
    if cold:
        images = list(dict.fromkeys([image_name(profile), image_name()]))  # layer, then base
        reporter.info(f"cold: removing the cached image(s) {', '.join(images)} first")
        podman.run("image", "rm", "-f", *images, check=False)
        seconds, _ = _timed_up(cluster, profile)
        measurements["cold"].append(seconds)
        reporter.info(f"cold up: {seconds:.1f} s")
        api.down(cluster, ListReporter())
    for number in range(1, trials + 1):
        seconds, _ = _timed_up(cluster, profile)
        measurements["warm"].append(seconds)
        noop, changed = _timed_up(cluster, profile, said=reporter)
        measurements["noop"].append(noop)
        full, full_changed = _timed_up(cluster, profile, full=True)
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


def table(result: dict) -> str:
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
