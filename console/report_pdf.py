"""The monthly report as a PDF a customer can be sent (ReportLab platypus).

Text goes in with the standard Helvetica font: no font file to ship, and the words stay
searchable in the file. Characters Helvetica lacks print as boxes rather than failing.
Every stored text is escaped before it reaches a Paragraph, whose markup is XML.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import HorizontalBarChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    Flowable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from console.formatting import utc_text
from console.report_model import GroupUptime, Report, hours_text, share_text

CHART_BARS = 15
CELL_MAX = 60  # characters of a stored text in a table cell: a table never overflows the page
_STYLES = getSampleStyleSheet()
_TABLE_STYLE = TableStyle(
    [
        ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef1f6")),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#d5dae3")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
)


def _cell(value: str | None) -> str:
    if not value:
        return "—"
    # Control characters and line separators would break a row into pieces.
    flat = "".join(" " if ch.isspace() else ch for ch in value)
    return flat if len(flat) <= CELL_MAX else flat[: CELL_MAX - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> Table:
    if not rows:
        return Paragraph("None this month.", _STYLES["Normal"])
    table = Table([list(header), *rows], repeatRows=1, hAlign="LEFT")
    style = TableStyle(_TABLE_STYLE.getCommands())
    style.add("ALIGN", (numeric_from, 0), (-1, -1), "RIGHT")
    table.setStyle(style)
    return table


def _heading(text: str) -> Paragraph:
    return Paragraph(escape(text), _STYLES["Heading2"])


def _uptime_chart(groups: Sequence[GroupUptime], by_store: bool) -> Drawing | None:
    worst = sorted(groups, key=lambda g: g.seconds.share or 0.0)[:CHART_BARS]
    if not worst:
        return None
    height = 20 + 14 * len(worst)
    drawing = Drawing(170 * mm, height)
    chart = HorizontalBarChart()
    chart.x, chart.y = 45 * mm, 10
    chart.width, chart.height = 115 * mm, height - 20
    # Drawn bottom up: reversed, so the worst is on top as in the tables.
    chart.data = [[round((g.seconds.share or 0.0) * 100, 2) for g in reversed(worst)]]
    labels = [_cell(g.store_code or "(no store)" if by_store else g.customer) for g in worst]
    chart.categoryAxis.categoryNames = [label[:30] for label in reversed(labels)]
    chart.categoryAxis.labels.fontName = "Helvetica"
    chart.categoryAxis.labels.fontSize = 7
    chart.valueAxis.valueMin, chart.valueAxis.valueMax, chart.valueAxis.valueStep = 0, 100, 20
    chart.valueAxis.labels.fontSize = 7
    chart.bars[0].fillColor = colors.HexColor("#1f5eff")
    chart.bars[0].strokeColor = None
    drawing.add(chart)
    return drawing


def _summary(report: Report) -> Table:
    rows = [
        ["Period", f"{utc_text(report.start)} to {utc_text(report.end)}"
                   + (" (month in progress)" if report.in_progress else "")],
        ["Time zone", report.timezone],
        ["Terminals in service", str(report.terminals_counted)],
        ["Uptime", share_text(report.total.share)
                   + (f" (counted to {utc_text(report.uptime_through)})"
                      if report.uptime_through is not None else "")],
        ["Alerts raised", str(report.alert_total)],
        ["Incidents", str(report.incidents.incidents)],
        ["Time to resolve", f"median {hours_text(report.resolve.median_s)}, "
                            f"90th percentile {hours_text(report.resolve.p90_s)} "
                            f"({report.resolve.resolved} resolved)"],
    ]  # fmt: skip
    table = Table(rows, hAlign="LEFT", colWidths=[45 * mm, 120 * mm])
    table.setStyle(TableStyle([("FONT", (0, 0), (-1, -1), "Helvetica", 9),
                               ("FONT", (0, 0), (0, -1), "Helvetica-Bold", 9)]))  # fmt: skip
    return table


def _uptime_parts(report: Report) -> list[Flowable]:
    by_store = report.customer is not None
    groups = report.stores if by_store else report.customers
    parts: list[Flowable] = [_heading("Uptime per store" if by_store else "Uptime per customer")]
    chart = _uptime_chart(groups, by_store)
    if chart is not None:
        parts.append(chart)
    first = ["Store", "Name"] if by_store else ["Customer"]
    parts.append(
        _table(
            [*first, "Terminals", "Uptime"],
            [
                [
                    *(
                        [_cell(g.store_code or "(no store)"), _cell(g.store_name)]
                        if by_store
                        else [_cell(g.customer)]
                    ),
                    str(g.terminals),
                    share_text(g.seconds.share),
                ]
                for g in groups
            ],  # fmt: skip
            len(first),
        )
    )
    parts.append(
        _heading("Terminals" if by_store else f"The {len(report.terminals)} worst terminals")
    )
    parts.append(
        _table(
            ["Serial", "Store", "Customer" if not by_store else "Firmware", "Status", "Uptime"],
            [
                [
                    _cell(t.serial),
                    _cell(t.store_code),
                    _cell(t.firmware if by_store else t.customer),
                    _cell(t.status),
                    share_text(t.seconds.share),
                ]
                for t in report.terminals
            ],  # fmt: skip
            4,
        )
    )
    return parts


def _alert_parts(report: Report) -> list[Flowable]:
    return [
        _heading("Alerts by kind and severity"),
        _table(
            ["Kind", "Severity", "Alerts", "Occurrences"],
            [
                [_cell(a.kind), _cell(a.severity), str(a.alerts), str(a.occurrences)]
                for a in report.alerts
            ],  # fmt: skip
            2,
        ),
        _heading("Most alerting terminals"),
        _table(
            ["Serial", "Customer", "Store", "Alerts", "Occurrences"],
            [
                [
                    _cell(t.serial),
                    _cell(t.customer),
                    _cell(t.store_code),
                    str(t.alerts),
                    str(t.occurrences),
                ]
                for t in report.top_alerting
            ],  # fmt: skip
            3,
        ),
        _heading("Firmware (terminals in service now)"),
        _table(
            ["Version", "Terminals"],
            [[_cell(f.version or "unknown"), str(f.terminals)] for f in report.firmware],
            1,
        ),
    ]


def render(report: Report) -> bytes:
    """The report as the bytes of a PDF file."""
    who = report.customer if report.customer is not None else "The whole fleet"
    title = f"TMS report: {who}, {report.month.title}"
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=title[:200],
        author="TMS operations",
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
    )
    story: list[Flowable] = [
        Paragraph(escape(who), _STYLES["Title"]),
        Paragraph(escape(f"Monthly report, {report.month.title}"), _STYLES["Heading3"]),
        _summary(report),
        Spacer(0, 4 * mm),
        *_uptime_parts(report),
        *_alert_parts(report),
        Spacer(0, 4 * mm),
        Paragraph(
            escape(
                "Uptime: the share of each terminal's in-service time this month during which "
                "it was online, from its status history. "
                f"Generated {utc_text(report.generated_at)}."
            ),
            _STYLES["Italic"],
        ),
    ]
    document.build(story)
    return buffer.getvalue()
