"""The dashboard's SVG line charts (console.charts): where points land, and the axes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.charts import HEIGHT, PAD_BOTTOM, PAD_LEFT, PAD_TOP, WIDTH, _nice_max, line_chart

pytestmark = pytest.mark.unit

START = datetime(2026, 12, 1, tzinfo=UTC)
END = START + timedelta(hours=24)


def test_points_are_placed_by_time_and_value() -> None:
    chart = line_chart([(START, 0.0), (END, 100.0)], START, END, y_max=100.0)
    bottom = HEIGHT - PAD_BOTTOM
    assert chart.path == f"M {PAD_LEFT}.0 {bottom}.0 L {WIDTH}.0 {PAD_TOP}.0"
    assert chart.area.endswith("Z") and not chart.empty


def test_points_outside_the_period_are_dropped_and_order_does_not_matter() -> None:
    middle = START + timedelta(hours=12)
    chart = line_chart([(middle, 5.0), (START - timedelta(hours=1), 9.0), (START, 1.0)], START, END)
    assert chart.path.count("L") == 1 and chart.path.startswith(f"M {PAD_LEFT}.0")


def test_no_points_is_an_empty_chart_with_axes() -> None:
    chart = line_chart([], START, END)
    assert chart.empty and chart.path == "" and chart.area == ""
    assert [tick.label for tick in chart.x_ticks][:2] == ["00:00", "04:00"]
    assert [tick.label for tick in chart.y_ticks] == ["0", "0.5", "1"]


def test_values_above_the_axis_are_clamped_not_drawn_off_the_chart() -> None:
    chart = line_chart([(START, 250.0)], START, END, y_max=100.0)
    assert chart.path == f"M {PAD_LEFT}.0 {PAD_TOP}.0"


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (0.3, 1), (1, 1), (7, 10), (12, 20), (420, 500), (9_999, 10_000)]
)
def test_the_axis_top_is_a_round_number(value: float, top: float) -> None:
    assert _nice_max(value) == top
