"""The terminal screens: the fleet list, its live partial, one terminal
(with its commands panel, command history and log; the commands are ``console.commands``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, current_app, render_template, request
from werkzeug.datastructures import MultiDict

from commands import queue
from console import fleet
from console.access import requires_role
from console.db import request_session
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


@dataclass(frozen=True)
class ListQuery:
    """The list's filters and page from the query string; unknown values are dropped."""

    status: str | None = None
    customer: str | None = None
    search: str | None = None
    page: int = 1

    @classmethod
    def parse(cls, args: MultiDict[str, str]) -> ListQuery:
        status = args.get("status", "").strip().lower()
        try:
            page = min(MAX_PAGE, max(1, int(args.get("page", "1"))))
        except ValueError:
            page = 1
        return cls(
            status=status if status in _STATUSES else None,
            customer=args.get("customer", "").strip() or None,
            search=args.get("q", "").strip()[:64] or None,
            page=page,
        )

    @property
    def filter(self) -> fleet.TerminalFilter:
        return fleet.TerminalFilter(self.status, self.customer, self.search)

    def args(self, **changes: Any) -> dict[str, Any]:
        """Query-string arguments for a link to this list with ``changes`` applied."""
        current = {
            "status": self.status,
            "customer": self.customer,
            "q": self.search,
            "page": self.page if self.page > 1 else None,
        }
        current.update(changes)
        return {key: value for key, value in current.items() if value}


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
            order="attention",
        ),
        "total": total,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "counts": fleet.counts_by_status(db, query.customer),
        "statuses": CARD_ORDER,
    }


@bp.route("/terminals")
@requires_role(Role.VIEWER)
def index() -> str:
    return render_template(
        "terminals.html",
        customers=fleet.customer_names(request_session()),
        refresh_s=current_app.config["TMS_REFRESH_S"],
        **_fleet_context(),
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
    return render_template(
        "terminal.html",
        terminal=terminal,
        history=fleet.status_history(db, serial),
        commands=queue.list_commands(db, serial, limit=COMMAND_HISTORY),
        log=fleet.terminal_log(db, serial, limit=LOG_LINES),
        refresh_s=current_app.config["TMS_REFRESH_S"],
        **extra,
    )


@bp.route("/terminals/<serial>")
@requires_role(Role.VIEWER)
def detail(serial: str) -> str:
    return render_detail(serial)
