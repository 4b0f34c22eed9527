"""The reports screens: pick a month and a customer (or the fleet); the month's report on
screen, as CSV, and as a PDF to send the customer. Downloads are audited: they leave the
building. Queries are console.report_repository's; the PDF is console.report_pdf's.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from console import report_pdf
from console import report_repository as repository
from console.access import acting_user, client_address, requires_role
from console.audit import csv_cell
from console.db import request_session
from console.report_model import (
    BadMonth,
    Report,
    ReportMonth,
    bar_chart,
    hours_text,
    share_text,
    slug,
)
from console.uptime import UptimeSeconds
from shared.models import Customer, Role

bp = Blueprint("reports", __name__)

CUSTOMER_MAX = 200  # customer.name's width
CHART_BARS = 15


def _customer_or_404() -> Customer | None:
    """The ``customer`` asked for, None for the fleet; a name nobody has is a 404."""
    name = request.args.get("customer", "")
    if not name:
        return None
    customer = repository.customer_named(request_session(), name[: CUSTOMER_MAX + 1])
    if customer is None:
        abort(404, description=f"There is no customer called {name[:CUSTOMER_MAX]!r}.")
    return customer


def _month_or_404(text: str) -> ReportMonth:
    try:
        return ReportMonth.parse(text, datetime.now(UTC))
    except BadMonth as exc:
        abort(404, description=f"No report for that month: {exc}")


def _report(month_text: str, with_stores: bool = True) -> Report:
    month = _month_or_404(month_text)
    customer = _customer_or_404()
    return repository.build_report(
        request_session(), month, customer, datetime.now(UTC), with_stores
    )


@bp.get("/reports")
@requires_role(Role.VIEWER)
def index() -> BaseResponse | tuple[str, int]:
    now = datetime.now(UTC)
    db = request_session()
    names = repository.customer_names(db)
    month_text = request.args.get("month", "").strip()
    customer = request.args.get("customer", "")
    errors: dict[str, str] = {}
    if "month" in request.args:  # the form was sent; a link may preselect a customer only
        try:
            month = ReportMonth.parse(month_text, now)
        except BadMonth as exc:
            errors["month"] = str(exc)
        if customer and customer not in names:
            errors["customer"] = "There is no customer by that name."
        if not errors:
            args: dict[str, Any] = {"customer": customer} if customer else {}
            return redirect(url_for("reports.report", month=month.key, **args))
    default = ReportMonth.last_full(now)
    page = render_template(
        "reports.html",
        month=month_text[:20] or default.key,
        default_month=default,
        latest_month=ReportMonth.of(now).key,
        customer=customer[:CUSTOMER_MAX],
        customers=names,
        errors=errors,
    )
    return page, 400 if errors else 200


def _charts(report: Report) -> dict[str, object]:
    groups = report.stores if report.customer is not None else report.customers
    worst = sorted(groups, key=lambda g: g.seconds.share or 0.0)[:CHART_BARS]
    return {
        "uptime_chart": bar_chart(
            [
                (
                    g.store_code or "(no store)" if report.customer else g.customer,
                    (g.seconds.share or 0.0) * 100,
                    share_text(g.seconds.share),
                )
                for g in worst
            ],  # fmt: skip
            top=100.0,
        ),
        "firmware_chart": bar_chart(
            [(f.version or "unknown", f.terminals, str(f.terminals)) for f in report.firmware][
                :CHART_BARS
            ]
        ),
        "alerts_chart": bar_chart(
            [(f"{a.kind} · {a.severity}", a.alerts, str(a.alerts)) for a in report.alerts][
                :CHART_BARS
            ]
        ),
    }


@bp.get("/reports/<month>")
@requires_role(Role.VIEWER)
def report(month: str) -> str:
    shown = _report(month, with_stores=False)
    args = {"customer": shown.customer} if shown.customer else {}
    return render_template(
        "report.html",
        report=shown,
        args=args,
        share=share_text,
        hours=hours_text,
        previous=shown.month.previous(),
        following=shown.month.next() if not shown.in_progress else None,
        **_charts(shown),
    )


def _export(shown: Report, report_format: str) -> None:
    user = acting_user()
    assert user is not None  # requires_role let the request through
    repository.record_export(
        request_session(), user.username, report_format, shown.month, shown.customer,
        client_address(),
    )  # fmt: skip


def _filename(shown: Report, extension: str) -> str:
    return f"tms-report-{slug(shown.customer)}-{shown.month.key}.{extension}"


def _download(body: bytes | str, mimetype: str, filename: str) -> Response:
    return Response(
        body,
        mimetype=mimetype,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


SECONDS_HEADER = ("online_s", "in_service_s", "uptime_pct")


def _figures(seconds: UptimeSeconds) -> list[str]:
    share = seconds.share
    pct = "" if share is None else f"{share * 100:.4f}"
    return [f"{seconds.online:.0f}", f"{seconds.in_service:.0f}", pct]


def csv_text(shown: Report) -> str:
    """Per-terminal rows for a customer; per-store rows of every customer for the fleet."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if shown.customer is not None:
        writer.writerow(
            ("serial", "store_code", "store_name", "status", "firmware", *SECONDS_HEADER)
        )
        for t in shown.terminals:
            cells = (t.serial, t.store_code or "", t.store_name or "", t.status, t.firmware or "")
            writer.writerow([*map(csv_cell, cells), *_figures(t.seconds)])
    else:
        writer.writerow(("customer", "store_code", "store_name", "terminals", *SECONDS_HEADER))
        for g in shown.stores:
            texts = (g.customer, g.store_code or "", g.store_name or "")
            writer.writerow([*map(csv_cell, texts), str(g.terminals), *_figures(g.seconds)])
    return buffer.getvalue()


@bp.get("/reports/<month>.csv")
@requires_role(Role.VIEWER)
def report_csv(month: str) -> Response:
    shown = _report(month)
    _export(shown, "csv")
    return _download(csv_text(shown), "text/csv", _filename(shown, "csv"))


@bp.get("/reports/<month>.pdf")
@requires_role(Role.VIEWER)
def report_pdf_file(month: str) -> Response:
    shown = _report(month, with_stores=False)
    body = report_pdf.render(shown)
    _export(shown, "pdf")
    return _download(body, "application/pdf", _filename(shown, "pdf"))
