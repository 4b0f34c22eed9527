"""The audit screen (admins only): the trail searched by who, what, target, time and
address, newest first, a page at a time; and the same search as a CSV file.

The filters are a GET form, so everything is in the URL (console.audit_query reads it);
console.audit_repository runs the queries. An export is itself audited.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, render_template, request, stream_with_context

from console import audit_repository, formatting
from console.access import acting_user, client_address, requires_role
from console.audit_query import DATE_FORMS, AuditQuery, action_choices
from console.audit_repository import AuditRow
from console.db import request_session
from shared.models import Role

bp = Blueprint("audit", __name__)

CSV_HEADER = ("id", "at", "actor", "action", "target", "remote_addr", "detail")
# A spreadsheet runs a cell starting with one of these as a formula (OWASP's list:
# tab and carriage return too); a leading ' makes it text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _page(query: AuditQuery) -> tuple[str, int]:
    db = request_session()
    page = audit_repository.search_audit(db, query) if query.valid else None
    return (
        render_template(
            "audit.html",
            query=query,
            page=page,
            actions=action_choices(audit_repository.distinct_actions(db)),
            date_forms=DATE_FORMS,
            page_size=audit_repository.PAGE_SIZE,
        ),
        200 if query.valid else 400,
    )


@bp.route("/audit")
@requires_role(Role.ADMIN)
def index() -> tuple[str, int]:
    return _page(AuditQuery.parse(request.args))


def csv_cell(value: str) -> str:
    """``value`` safe to open in a spreadsheet: never read as a formula."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _at_text(moment: datetime) -> str:
    try:
        return moment.astimezone(UTC).isoformat()
    except OverflowError:  # a clamped year-1 or year-9999 time with an offset
        return formatting.utc_text(moment)


def csv_record(row: AuditRow) -> list[str]:
    detail = "" if row.detail is None else json.dumps(row.detail, ensure_ascii=False)
    texts = (row.actor, row.action, row.target, row.remote_addr or "", detail)
    return [str(row.id), _at_text(row.at), *(csv_cell(text) for text in texts)]


def csv_chunks(batches: Iterable[list[AuditRow]]) -> Iterator[str]:
    """The CSV file, one chunk per batch of rows (the header first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    for rows in batches:
        writer.writerows(csv_record(row) for row in rows)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


@bp.route("/audit.csv")
@requires_role(Role.ADMIN)
def export() -> Response | tuple[str, int]:
    query = AuditQuery.parse(request.args)
    if not query.valid:
        return _page(query)
    user = acting_user()
    assert user is not None  # requires_role let the request through
    db = request_session()
    audit_repository.record_export(db, user.username, query, client_address())
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    chunks: Iterator[Any] = csv_chunks(audit_repository.export_rows(db, query))
    return Response(
        stream_with_context(chunks),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="audit-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )
