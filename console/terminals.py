"""The terminal screens: the fleet list, its live partial, one terminal
(with its commands panel, command history and log; the commands are ``console.commands``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    render_template,
    request,
    stream_with_context,
)
from sqlmodel import Session
from werkzeug.datastructures import MultiDict

from commands import queue
from console import fleet, update_history, users
from console.access import acting_user, client_address, requires_role
from console.charts import LineChart, line_chart
from console.db import engine_of, request_session
from registry.terminal_tags import TAG_MAX, TAGS_MAX
from shared.models import Role, TerminalStatus

bp = Blueprint("terminals", __name__)

PAGE_SIZE = 100
# Far past any fleet's last page, and small enough that the row offset it makes fits
# PostgreSQL's bigint (page=10**30 was a 500).
MAX_PAGE = 2**31 - 1
COMMAND_HISTORY = 20
LOG_LINES = 50
_STATUSES = frozenset(status.value for status in TerminalStatus)
# Order of the count cards: the normal state first, then the ones that need a look.
CARD_ORDER = [
    TerminalStatus.ONLINE.value,
    TerminalStatus.OFFLINE.value,
    TerminalStatus.ERROR.value,
    TerminalStatus.UNKNOWN.value,
    TerminalStatus.DECOMMISSIONED.value,
]


# "maintenance" is not a status but is filtered like one: the team's own flag.
MAINTENANCE = "maintenance"
# Rows one may tick for a bulk command; more is a filter's job.
MAX_PICKED = 1000
SORTS = frozenset({"attention", *fleet.SORT_COLUMNS})


@dataclass(frozen=True)
class ListQuery:
    """The list's filters, sort and page from the query string; unknown values are dropped."""

    status: str | None = None
    customer: str | None = None
    search: str | None = None
    page: int = 1
    store: str | None = None
    firmware: str | None = None
    model: str | None = None
    sort: str = "attention"
    descending: bool = False
    serials: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @classmethod
    def parse(cls, args: MultiDict[str, str]) -> ListQuery:
        status = args.get("status", "").strip().lower()
        try:
            page = min(MAX_PAGE, max(1, int(args.get("page", "1"))))
        except ValueError:
            page = 1
        sort = args.get("sort", "").strip().lower()
        return cls(
            status=status if status in _STATUSES or status == MAINTENANCE else None,
            customer=args.get("customer", "").strip() or None,
            search=args.get("q", "").strip()[:64] or None,
            page=page,
            store=args.get("store", "").strip()[:200] or None,
            firmware=args.get("firmware", "").strip()[:64] or None,
            model=args.get("model", "").strip()[:64] or None,
            sort=sort if sort in SORTS else "attention",
            descending=args.get("dir", "") == "desc",
            serials=tuple(
                dict.fromkeys(
                    v.strip()[:64] for v in args.getlist("serial")[:MAX_PICKED] if v.strip()
                )
            ),
            tags=_tags_wanted(args.getlist("tag")),
        )

    @property
    def filter(self) -> fleet.TerminalFilter:
        maintenance = self.status == MAINTENANCE
        return fleet.TerminalFilter(
            None if maintenance else self.status,
            self.customer,
            self.search,
            self.store,
            self.firmware,
            self.model,
            True if maintenance else None,
            self.serials,
            self.tags,
        )

    def args(self, **changes: Any) -> dict[str, Any]:
        """Query-string arguments for a link to this list with ``changes`` applied."""
        current = {
            "status": self.status,
            "customer": self.customer,
            "q": self.search,
            "store": self.store,
            "firmware": self.firmware,
            "model": self.model,
            "sort": self.sort if self.sort != "attention" else None,
            "dir": "desc" if self.descending else None,
            "page": self.page if self.page > 1 else None,
            "serial": list(self.serials) or None,
            "tag": ",".join(self.tags) or None,
        }
        current.update(changes)
        return {key: value for key, value in current.items() if value}

    def sort_args(self, column: str) -> dict[str, Any]:
        """A column header's link: sort by it, or turn the order round if it is the key."""
        again = self.sort == column and not self.descending
        return self.args(sort=column, dir="desc" if again else None, page=None)


def _tags_wanted(values: list[str]) -> tuple[str, ...]:
    """The tags of ``?tag=a&tag=b`` or ``?tag=a,b``, each once. A malformed one is kept
    (it matches nothing, console.fleet) rather than dropped, which would widen the list;
    past one more than a terminal may carry, more cannot narrow it further."""
    found = dict.fromkeys(
        tag.strip()[: TAG_MAX + 1] for value in values for tag in value.split(",") if tag.strip()
    )
    return tuple(found)[: TAGS_MAX + 1]


def _fleet_context() -> dict[str, Any]:
    query = ListQuery.parse(request.args)
    db = request_session()
    total = fleet.count_terminals(db, query.filter)
    return {
        "query": query,
        "terminals": fleet.list_terminals(
            db,
            query.filter,
            limit=PAGE_SIZE,
            offset=(query.page - 1) * PAGE_SIZE,
            order=query.sort,
            descending=query.descending,
        ),
        "total": total,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "counts": fleet.counts_by_status(db, query.customer),
        "statuses": CARD_ORDER,
    }


@bp.route("/terminals")
@requires_role(Role.VIEWER)
def index() -> str:
    db = request_session()
    return render_template(
        "terminals.html",
        customers=fleet.customer_names(db),
        models=fleet.distinct_values(db, "model"),
        firmwares=fleet.distinct_values(db, "firmware"),
        refresh_s=current_app.config["TMS_REFRESH_S"],
        **_fleet_context(),
    )


CSV_MAX_ROWS = 200_000
CSV_BATCH = 2_000
CSV_COLUMNS = [
    "serial", "status", "status_reason", "customer", "store", "model", "firmware",
    "last_heartbeat_at", "cpu_pct", "memory_pct", "disk_pct", "host", "maintenance",
    "installed_at",
]  # fmt: skip


def csv_cell(value: Any) -> str:
    """A value as a CSV cell a spreadsheet will not run: formulas are quoted away."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@bp.route("/terminals.csv")
@requires_role(Role.VIEWER)
def export_csv() -> Response:
    """The current view (filters and order, every page) as CSV, streamed."""
    query = ListQuery.parse(request.args)
    db = request_session()
    user = acting_user()
    users.record_audit(
        db, user.username if user else "anonymous", "terminals.exported", "terminals",
        {"filter": query.filter.to_json(), "sort": query.sort}, client_address(),
    )  # fmt: skip
    engine = engine_of(current_app)

    def rows() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        # A session of its own: the request's is closed before the stream ends.
        with Session(engine) as session:
            for offset in range(0, CSV_MAX_ROWS, CSV_BATCH):
                batch = fleet.list_terminals(
                    session, query.filter, limit=CSV_BATCH, offset=offset,
                    order=query.sort, descending=query.descending,
                )  # fmt: skip
                for t in batch:
                    writer.writerow(
                        csv_cell(v)
                        for v in (
                            t.serial, t.status, t.status_reason, t.customer, t.store, t.model,
                            t.firmware, t.last_heartbeat_at, t.cpu, t.memory, t.disk,
                            t.host_name, "yes" if t.maintenance else "", t.installed_at,
                        )
                    )  # fmt: skip
                yield out.getvalue()
                out.seek(0)
                out.truncate()
                if len(batch) < CSV_BATCH:
                    return

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="tms-terminals-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


@bp.route("/terminals/fleet")
@requires_role(Role.VIEWER)
def fleet_partial() -> str:
    """The counts and the table alone: what the page's script swaps in every refresh."""
    return render_template("_fleet.html", **_fleet_context())


def render_detail(serial: str, **extra: Any) -> str:
    """One terminal's page: its facts, history, commands panel and log (``extra`` for the
    commands panel, e.g. a form sent back with its error)."""
    db = request_session()
    terminal = fleet.get_terminal(db, serial)
    if terminal is None:
        abort(404, description=f"There is no terminal with serial {serial}.")
    period = request.args.get("period", "24h")
    period = period if period in fleet.PERIODS else "24h"
    now = datetime.now(UTC)
    points = fleet.resource_history(db, serial, period, now)
    start = now - fleet.PERIODS[period][0]
    label = "%H:%M" if period == "24h" else "%d %b"

    def chart(values: list[tuple[datetime, float | None]], **options: Any) -> LineChart:
        drawn = [(at, value) for at, value in values if value is not None]
        return line_chart(drawn, start, now, label_format=label, **options)

    charts = {
        "CPU": chart([(p.at, p.cpu) for p in points], y_max=100.0, y_suffix="%"),
        "Memory": chart([(p.at, p.memory) for p in points], y_max=100.0, y_suffix="%"),
        "Disk": chart([(p.at, p.disk) for p in points], y_max=100.0, y_suffix="%"),
        "Heartbeats": chart([(p.at, float(p.heartbeats)) for p in points]),
    }
    return render_template(
        "terminal.html",
        terminal=terminal,
        charts=charts,
        period=period,
        periods=list(fleet.PERIODS),
        audit=fleet.terminal_audit(db, serial),
        alerts=fleet.terminal_alerts(db, serial),
        history=fleet.status_history(db, serial),
        commands=queue.list_commands(db, serial, limit=COMMAND_HISTORY),
        log=fleet.terminal_log(db, serial, limit=LOG_LINES),
        updates=update_history.terminal_updates(db, serial),
        updates_shown=update_history.UPDATES_SHOWN,
        refresh_s=current_app.config["TMS_REFRESH_S"],
        **extra,
    )


@bp.route("/terminals/<serial>")
@requires_role(Role.VIEWER)
def detail(serial: str) -> str:
    return render_detail(serial)
