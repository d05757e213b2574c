"""The admin's charts: SVG line charts drawn here, from the workers' samples.

No JavaScript draws anything and nothing is fetched from elsewhere: the
overview's refresh swaps in this markup as it does the tables'. Every text
goes through ``format_html`` (escaped); colours come from CSS variables in
admin.css, so light mode, dark mode and the theme toggle all apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .engine import samples

WIDTH, HEIGHT = 360, 120
MIN_POINTS = 30  # the narrowest a chart gets: 5 minutes of the hour's, 2.5 hours of the day's
LEFT, RIGHT, TOP, BOTTOM = 44, 6, 8, 18  # room for the axes' labels


@dataclass(frozen=True)
class Line:
    name: str  # shown in the legend; its CSS class is jq-line-<kind>
    kind: str
    values: Sequence[float | None]  # one per point; None: no sample there


def nice_ceiling(value: float) -> float:
    """The least of 1, 2, 2.5, 5 x 10^n at or above ``value`` (an axis's top)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power


def _polylines(values: Sequence[float | None], x: Callable[[int], float], y: Callable[[float], float]) -> list[str]:
    """``points`` attributes of the runs of values between gaps."""
    runs: list[list[str]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append(f"{x(i):.1f},{y(value):.1f}")
    return [" ".join(run) for run in runs if run]


def line_chart(
    title: str, lines: Sequence[Line], *, span_label: str, unit: Callable[[float], str], describe: str
) -> SafeString:
    """One chart: ``lines`` over the same points, oldest left; the y axis from 0."""
    count = max((len(line.values) for line in lines), default=0)
    top = nice_ceiling(max((v for line in lines for v in line.values if v is not None), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (count - 1) if count > 1 else 0.0)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - min(value, top) / top)

    shapes = [(line.kind, points, line.name) for line in lines for points in _polylines(line.values, x, y)]
    drawn = sum(points.count(",") for _, points, _ in shapes)
    grid = format_html_join(
        "",
        '<line class="jq-grid" x1="{}" x2="{}" y1="{}" y2="{}"></line>'
        '<text class="jq-axis" x="{}" y="{}" text-anchor="end">{}</text>',
        (
            (LEFT, WIDTH - RIGHT, f"{y(v):.1f}", f"{y(v):.1f}", LEFT - 4, f"{y(v) + 4:.1f}", unit(v))
            for v in (0, top / 2, top)
        ),
    )
    axis = format_html(
        '<text class="jq-axis" x="{}" y="{}">{}</text><text class="jq-axis" x="{}" y="{}" text-anchor="end">now</text>',
        LEFT,
        HEIGHT - 4,
        f"−{span_label}",
        WIDTH - RIGHT,
        HEIGHT - 4,
    )
    legend = format_html_join(
        " ",
        '<span class="jq-legend jq-line-{}"><span class="jq-swatch"></span>{}</span>',
        ((line.kind, line.name) for line in lines),
    )
    empty = (
        ""
        if drawn
        else format_html(
            '<text class="jq-axis jq-empty" x="{}" y="{}" text-anchor="middle">no samples yet</text>',
            LEFT + plot_w / 2,
            TOP + plot_h / 2,
        )
    )
    return format_html(
        '<figure class="jq-chart-box"><figcaption>{} {}</figcaption>'
        '<svg class="jq-chart" viewBox="0 0 {} {}" role="img" aria-label="{}" data-points="{}">{}{}{}{}</svg></figure>',
        title,
        legend,
        WIDTH,
        HEIGHT,
        describe,
        drawn,
        grid,
        axis,
        format_html_join("", '<polyline class="jq-line jq-line-{}" points="{}"><title>{}</title></polyline>', shapes),
        empty,
    )


def _per_second(step: int) -> Callable[[int], float]:
    return lambda n: n / step


def _rate(value: float) -> str:
    return f"{value:g}/s"


def _count(value: float) -> str:
    return f"{value:g}"


def _seconds(value: float) -> str:
    if value and value < 1:
        return f"{value * 1000:g} ms"
    return f"{value:g} s"


def _duration_label(seconds: int) -> str:
    if seconds <= 3600:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:g} h"


def queue_charts(points: Sequence[samples.Point], span: str) -> list[SafeString]:
    """The three charts of one queue over ``span`` ("1h" or "24h"): from its
    first sample within the span (MIN_POINTS at least), so that a queue that
    began a few minutes ago fills its charts rather than their last pixels."""
    step, _length = samples.SERIES[span]
    per_s = _per_second(step)
    first = next((i for i, p in enumerate(points) if p.written), len(points))
    begin = max(0, min(first, len(points) - MIN_POINTS))
    points = points[begin:]
    label = _duration_label(len(points) * step)

    def rate(count: int | None, written: bool) -> float | None:
        # A bucket no worker wrote is a gap; one whose batches may still arrive has no rate yet.
        return per_s(count) if written and count is not None else None

    rates = [
        Line("completed", "completed", [rate(p.completed, p.written) for p in points]),
        Line("failed", "failed", [rate(p.failed, p.written) for p in points]),
    ]
    depth = [Line("pending", "pending", [p.pending for p in points])]
    waits = [
        Line("p50", "p50", [p.latency_p50_s for p in points]),
        Line("p95", "p95", [p.latency_p95_s for p in points]),
    ]
    every = f"one point per {step // 60} min" if step >= 60 else f"one point per {step} s"
    return [
        line_chart(
            "Jobs per second",
            rates,
            span_label=label,
            unit=_rate,
            describe=f"jobs completed and failed per second, {every}",
        ),
        line_chart("Pending", depth, span_label=label, unit=_count, describe=f"pending jobs, {every}"),
        line_chart(
            "Wait before start",
            waits,
            span_label=label,
            unit=_seconds,
            describe=f"enqueue-to-start latency p50 and p95, {every}",
        ),
    ]


def span_from(value: Any) -> str:
    return value if value in samples.SERIES else "1h"
