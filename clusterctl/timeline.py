"""A chaos run as a picture (SVG, no dependencies): faults as bands, the client's requests
per half second (answered / failed), and which node held the VIP, as coloured lanes.

A failover is read from it at a glance: a band, a red notch in the requests, the holder's
colour changing after it.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from clusterctl.bench.prober import Sample

if TYPE_CHECKING:
    from clusterctl.chaos import ChaosReport

WIDTH, LEFT, RIGHT = 1200, 110, 20
BIN = 0.5  # seconds per request bar
FAULT_COLOURS = {
    "crash": "#d62728",
    "freeze": "#1f77b4",
    "partition": "#9467bd",
    "agent-kill": "#ff7f0e",
    "service-kill": "#8c564b",
    "etcd-leader-kill": "#e377c2",
    "backend-kill": "#7f7f7f",
}
NODE_COLOURS = ["#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#bcbd22", "#8c564b"]


def render_timeline(
    report: ChaosReport,
    samples: list[Sample],
    holder_samples: list[tuple[float, tuple[str, ...]]],
    start: float,
) -> str:
    end = max(
        [
            report.duration_s,
            *(s.sent - start for s in samples[-1:]),
            *(t - start for t, _ in holder_samples[-1:]),
        ]
    )
    span = max(end, 1.0)
    plot = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + max(0.0, min(t, span)) / span * plot

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="330" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{LEFT}" y="16" font-size="13">{escape(_title(report))}</text>',
    ]
    # faults: one band each, labelled
    parts.append('<text x="8" y="50">faults</text>')
    for f in report.faults:
        colour = FAULT_COLOURS.get(f.kind, "#000")
        x0, x1 = x(f.injected_s), x(max(f.healed_s, f.injected_s + span / plot))
        parts.append(
            f'<rect x="{x0:.1f}" y="34" width="{max(1.5, x1 - x0):.1f}" height="22" '
            f'fill="{colour}" opacity="0.75"><title>{escape(f.kind)} on {escape(f.node)} at '
            f"{f.injected_s:.1f} s: outage {f.outage_s:.3f} s, {f.failed_requests} failed"
            "</title></rect>"
        )
        parts.append(
            f'<rect x="{x0:.1f}" y="70" width="{max(1.0, x1 - x0):.1f}" height="190" '
            f'fill="{colour}" opacity="0.08"/>'
        )
    # requests per bin: answered up from the axis, failed below it
    parts.append(
        '<text x="8" y="120">requests</text><text x="8" y="134" fill="#777">per 0.5 s</text>'
    )
    bins: dict[int, list[int]] = {}
    for s in samples:
        counts = bins.setdefault(int((s.sent - start) / BIN), [0, 0])
        counts[0 if s.ok else 1] += 1
    top = max([c[0] + c[1] for c in bins.values()] or [1])
    axis = 170
    width = max(1.0, plot * BIN / span)
    for index, (ok, failed) in sorted(bins.items()):
        x0 = x(index * BIN)
        if ok:
            h = ok / top * 90
            parts.append(_rect(x0, axis - h, width, h, "#2ca02c"))
        if failed:
            h = failed / top * 60
            parts.append(_rect(x0, axis, width, h, "#d62728"))
    parts.append(f'<line x1="{LEFT}" y1="{axis}" x2="{WIDTH - RIGHT}" y2="{axis}" stroke="#999"/>')
    # the holder: a coloured lane per run of samples with one holder, black where two held
    lane = 250
    parts.append(f'<text x="8" y="{lane + 4}">VIP holder</text>')
    nodes = sorted({n for _, h in holder_samples for n in h})
    colour_of = {n: NODE_COLOURS[i % len(NODE_COLOURS)] for i, n in enumerate(nodes)}
    for t0, t1, holders in _runs(holder_samples):
        if not holders:
            continue
        colour = "#000" if len(holders) > 1 else colour_of[holders[0]]
        x0 = x(t0 - start)
        parts.append(_rect(x0, lane - 6, max(0.8, x(t1 - start) - x0), 12, colour))
    # axis labels and legends
    for tick in range(0, int(span) + 1, max(1, int(span / 10))):
        parts.append(
            f'<text x="{x(tick):.1f}" y="282" text-anchor="middle" fill="#555">{tick} s</text>'
        )
    legend_x = LEFT
    for name, colour in [*colour_of.items()]:
        parts.append(f'<rect x="{legend_x}" y="296" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="305">{escape(name)}</text>')
        legend_x += 70
    for kind, colour in FAULT_COLOURS.items():
        if any(f.kind == kind for f in report.faults):
            parts.append(f'<rect x="{legend_x}" y="296" width="10" height="10" fill="{colour}"/>')
            parts.append(f'<text x="{legend_x + 14}" y="305">{escape(kind)}</text>')
            legend_x += 14 + 7 * len(kind) + 16
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _runs(
    samples: list[tuple[float, tuple[str, ...]]],
) -> list[tuple[float, float, tuple[str, ...]]]:
    """Consecutive samples with the same holders as (from, to, holders): one band each."""
    runs: list[tuple[float, float, tuple[str, ...]]] = []
    for (t0, holders), (t1, _) in zip(samples, samples[1:], strict=False):
        if runs and runs[-1][2] == holders and runs[-1][1] == t0:
            runs[-1] = (runs[-1][0], t1, holders)
        else:
            runs.append((t0, t1, holders))
    return runs


def _rect(x: float, y: float, width: float, height: float, fill: str) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{fill}"/>'
    )


def _title(report: ChaosReport) -> str:
    return (
        f"chaos on {report.cluster} ({report.profile}), seed {report.seed}: "
        f"{len(report.faults)} faults, {report.failed_requests:,} of {report.requests:,} requests "
        f"failed, {report.dual_holder_samples} two-holder samples, verdict {report.verdict}"
    )
