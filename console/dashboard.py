"""The dashboard (``/``): the fleet at a glance, live; the terminal list is /terminals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, current_app, render_template

from console import dashboard_repository as repo
from console.access import requires_role
from console.charts import line_chart
from console.db import request_session
from shared.models import Role

bp = Blueprint("dashboard", __name__)


def _context() -> dict[str, Any]:
    db = request_session()
    now = datetime.now(UTC)
    day_points = repo.online_series(db, hours=24, step_s=900)
    month_points = repo.online_series(db, hours=24 * 30, step_s=6 * 3600)
    totals, customers = repo.overview(db, now)
    return {
        "totals": totals,
        "uptime": repo.fleet_uptime(db, now),
        "critical": repo.critical_alerts(db),
        "customers": customers,
        "chart_day": line_chart(day_points, now - timedelta(hours=24), now),
        "chart_month": line_chart(
            month_points, now - timedelta(days=30), now, label_format="%d %b", x_labels=5
        ),
    }


@bp.route("/")
@requires_role(Role.VIEWER)
def index() -> str:
    return render_template(
        "dashboard.html", refresh_s=current_app.config["TMS_REFRESH_S"], **_context()
    )


@bp.route("/dashboard/live")
@requires_role(Role.VIEWER)
def live() -> str:
    """The dashboard's body alone: what the page's script swaps in every refresh."""
    return render_template("_dashboard.html", **_context())
