"""Line charts as SVG geometry (pure: no Flask, no database).

The console draws its charts on the server as inline SVG: no chart library, no script,
and the page is complete before any JavaScript runs. ``line_chart`` turns (time, value)
points into the path and axis labels a template puts into an ``<svg>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

WIDTH = 600
HEIGHT = 160
PAD_LEFT = 44
PAD_BOTTOM = 22
PAD_TOP = 8


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class LineChart:
    path: str  # an SVG path: "M x y L x y ..."; empty when there is nothing to draw
    area: str  # the same line closed down to the axis, for a light fill
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    empty: bool = False


def _nice_max(value: float) -> float:
    """The smallest of 1, 2, 5 × 10^n at or above ``value`` (a readable axis top)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= value:
            return step * factor
    return step * 10


def line_chart(
    points: Sequence[tuple[datetime, float]],
    start: datetime,
    end: datetime,
    *,
    label_format: str = "%H:%M",
    x_labels: int = 6,
    y_max: float | None = None,
    y_suffix: str = "",
) -> LineChart:
    """The chart of ``points`` between ``start`` and ``end``; points outside are dropped."""
    plot_w = WIDTH - PAD_LEFT
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    span = max((end - start).total_seconds(), 1.0)
    inside = sorted((at, value) for at, value in points if start <= at <= end)
    top = y_max if y_max is not None else _nice_max(max((v for _, v in inside), default=0.0))

    def x_of(at: datetime) -> float:
        return round(PAD_LEFT + (at - start).total_seconds() / span * plot_w, 1)

    def y_of(value: float) -> float:
        clamped = min(max(value, 0.0), top)
        return round(PAD_TOP + plot_h - clamped / top * plot_h, 1)

    coords = [(x_of(at), y_of(value)) for at, value in inside]
    path = " ".join(f"{'M' if i == 0 else 'L'} {x} {y}" for i, (x, y) in enumerate(coords))
    area = ""
    if coords:
        base = PAD_TOP + plot_h
        area = f"{path} L {coords[-1][0]} {base} L {coords[0][0]} {base} Z"
    x_ticks = []
    for n in range(x_labels + 1):
        at = start + (end - start) * n / x_labels
        x_ticks.append(Tick(x_of(at), HEIGHT - 6, at.strftime(label_format)))
    y_ticks = [Tick(PAD_LEFT - 6, y_of(top * f), f"{top * f:g}{y_suffix}") for f in (0.0, 0.5, 1.0)]
    return LineChart(path, area, x_ticks, y_ticks, empty=not coords)
