"""The audit screen's search, paging and CSV export on real PostgreSQL: each filter,
every row once across pages, bad dates shown, formulas defused, admins only."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Session, col, select

from console import audit_repository
from console.db import engine_of
from shared import audit_trail
from shared.models import AuditEvent
from tests.fixtures.console import sign_in

pytestmark = pytest.mark.integration

ROW_ID = re.compile(r'<tr id="audit-(\d+)">')
OLDER = re.compile(r'id="audit-older" href="([^"]+)"')


@pytest.fixture
def admin(client: FlaskClient, make_user: Callable[..., str]) -> FlaskClient:
    make_user("root", "admin")
    sign_in(client, "root")
    return client


class Trail:
    """Writes audit rows straight into the test database."""

    def __init__(self, app: Flask) -> None:
        self.engine = engine_of(app)

    def add(
        self,
        actor: str = "sam",
        action: str = "user.created",
        target: str = "",
        *,
        at: str | None = None,
        remote_addr: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        with Session(self.engine) as session:
            row = session.execute(
                text(
                    "INSERT INTO audit_event (at, actor, action, target, detail, remote_addr)"
                    " VALUES (coalesce(CAST(:at AS timestamptz), now()), :actor, :action,"
                    " :target, :detail, :addr) RETURNING id"
                ).bindparams(bindparam("detail", type_=JSONB)),
                {"at": at, "actor": actor, "action": action, "target": target,
                 "detail": detail, "addr": remote_addr},
            ).one()  # fmt: skip
            session.commit()
            return int(row[0])

    def record(self, count: int, actor: str, action: str = "terminal.rotated") -> None:
        """``count`` rows through the trail's own writer, in one transaction."""
        with Session(self.engine) as session:
            for n in range(count):
                audit_trail.record(session, actor, action, f"TC-{n:04d}", {"n": n}, "10.1.1.1")
            session.commit()

    def ids(self, **where: str) -> set[int]:
        with Session(self.engine) as session:
            statement = select(AuditEvent.id)
            for name, value in where.items():
                statement = statement.where(getattr(AuditEvent, name) == value)
            return {int(i) for i in session.exec(statement).all() if i is not None}

    def last(self) -> AuditEvent:
        with Session(self.engine) as session:
            event = session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc())).first()
            assert event is not None
            session.expunge(event)
            return event


@pytest.fixture
def trail(console_app: Flask) -> Trail:
    return Trail(console_app)


def shown(client: FlaskClient, **args: str) -> list[int]:
    """The ids of the rows /audit shows for ``args``, in page order."""
    response = client.get("/audit?" + urlencode(args))
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    return [int(n) for n in ROW_ID.findall(response.get_data(as_text=True))]


# -- the page ------------------------------------------------------------------------------


def test_the_page_lists_rows_newest_first_and_links_to_users_instead_of_listing_them(
    admin: FlaskClient, trail: Trail, make_user: Callable[..., str]
) -> None:
    make_user("zed-the-viewer", "viewer")
    first = trail.add("sam", "terminal.decommissioned", "TC-9", remote_addr="10.0.0.8",
                      detail={"reason": "stolen"})  # fmt: skip
    second = trail.add("kim", "user.created", "zed-the-viewer")
    page = admin.get("/audit").get_data(as_text=True)
    assert shown(admin)[:2] == [second, first]
    assert "terminal.decommissioned" in page and "10.0.0.8" in page and "stolen" in page
    assert 'href="/users"' in page
    assert "<h2>Users</h2>" not in page
    # The new user's name appears only as the audit row's target, not in a users table.
    assert page.count("zed-the-viewer") == 1


def test_actor_is_exact_and_case_insensitive(admin: FlaskClient, trail: Trail) -> None:
    ann = trail.add("ann")
    upper = trail.add("ANN")
    trail.add("anna")
    trail.add("joann")
    assert shown(admin, actor="Ann") == [upper, ann]


def test_action_is_exact_or_a_family_or_a_prefix(admin: FlaskClient, trail: Trail) -> None:
    login = trail.add(action="login")
    failed = trail.add(action="login.failed")
    logout = trail.add(action="logout")
    created = trail.add(action="user.created")
    disabled = trail.add(action="user.disabled")
    trail.add(action="users.other")
    # "root" signed in: one more login row, before all of these.
    (root_login,) = trail.ids(action="login") - {login}
    assert shown(admin, action="login") == [login, root_login]
    assert shown(admin, action="login.failed") == [failed]
    assert shown(admin, action="login.") == [failed, login, root_login]
    assert shown(admin, action="user.") == [disabled, created]
    assert shown(admin, action="user") == []
    assert shown(admin, action="log*") == [logout, failed, login, root_login]


def test_the_action_box_offers_families_and_every_action(admin: FlaskClient, trail: Trail) -> None:
    trail.add(action="user.created")
    trail.add(action="user.created")
    trail.add(action="alert.acknowledged")
    page = admin.get("/audit?action=user.").get_data(as_text=True)
    options = re.findall(r'<option value="([^"]*)"', page)
    assert options == ["", "alert.", "user.", "alert.acknowledged", "login", "user.created"]
    assert '<option value="user." selected>' in page


def test_target_is_a_case_insensitive_substring_with_wildcards_taken_literally(
    admin: FlaskClient, trail: Trail
) -> None:
    percent = trail.add(target="promo 50%_off")
    plain = trail.add(target="promo 500ff")
    slash = trail.add(target="C:\\path")
    terminal = trail.add(target="TC-100")
    assert shown(admin, target="%") == [percent]
    assert shown(admin, target="_") == [percent]
    assert shown(admin, target="0%_O") == [percent]
    assert shown(admin, target="promo 50") == [plain, percent]
    assert shown(admin, target="\\") == [slash]
    assert shown(admin, target="tc-1") == [terminal]


def test_since_and_until_are_utc_and_include_the_day_or_minute_given(
    admin: FlaskClient, trail: Trail
) -> None:
    before = trail.add(at="2024-04-30 23:59:59.999999+00")
    start = trail.add(at="2024-05-01 00:00:00+00")
    minute = trail.add(at="2024-05-01 10:30:59.9+00")
    # 23:30 in UTC-2 is 01:30 UTC on 2 May: outside 1 May in UTC.
    late = trail.add(at="2024-05-01 23:30:00-02")
    end = trail.add(at="2024-05-01 23:59:59.999999+00")
    after = trail.add(at="2024-05-02 00:00:00+00")
    assert shown(admin, since="2024-05-01", until="2024-05-01") == [end, minute, start]
    assert shown(admin, until="2024-04-30") == [before]
    assert shown(admin, since="2024-05-02")[:2] == [after, late]  # and root's sign-in
    assert shown(admin, since="2024-05-01T10:30", until="2024-05-01T10:30") == [minute]
    assert shown(admin, since="2024-05-01T10:31", until="2024-05-02T00:00") == [after, end]


def test_remote_address_is_exact(admin: FlaskClient, trail: Trail) -> None:
    exact = trail.add(remote_addr="10.0.0.8")
    trail.add(remote_addr="10.0.0.80")
    trail.add(remote_addr=None)
    assert shown(admin, remote_addr="10.0.0.8") == [exact]


def test_filters_combine(admin: FlaskClient, trail: Trail) -> None:
    both = trail.add("ann", "user.created", "bob", remote_addr="10.0.0.8")
    trail.add("ann", "user.created", "bob", remote_addr="10.0.0.9")
    trail.add("ann", "user.disabled", "bob", remote_addr="10.0.0.8")
    trail.add("kim", "user.created", "bob", remote_addr="10.0.0.8")
    assert shown(admin, actor="ann", action="user.created", remote_addr="10.0.0.8") == [both]
    page = admin.get("/audit?actor=nobody").get_data(as_text=True)
    assert "Nothing matches." in page


def test_odd_values_are_cut_or_ignored_not_a_500(admin: FlaskClient, trail: Trail) -> None:
    trail.add("ann")
    for args in (
        {"actor": "x" * 1000, "target": "%" * 1000, "remote_addr": "1" * 1000},
        {"before_id": "9" * 40},
        {"before_id": "-" + "9" * 40},
        {"before_id": "not-a-number", "action": "*"},
    ):
        assert admin.get("/audit?" + urlencode(args)).status_code == 200, args
    assert shown(admin, before_id="9" * 40) == shown(admin)
    assert shown(admin, before_id="-" + "9" * 40) == []


# -- paging --------------------------------------------------------------------------------


def walk(client: FlaskClient, url: str) -> list[list[int]]:
    """The ids of each page, following the Older links from ``url`` to the last page."""
    pages: list[list[int]] = []
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url)
        assert response.status_code == 200
        body = response.get_data(as_text=True)
        pages.append([int(n) for n in ROW_ID.findall(body)])
        older = OLDER.search(body)
        next_url = older.group(1).replace("&amp;", "&") if older else None
        assert len(pages) < 10, "the Older links never end"
    return pages


def test_paging_shows_every_row_once_newest_first(admin: FlaskClient, trail: Trail) -> None:
    trail.record(250, "pager")
    everything = trail.ids()
    assert len(everything) == 251  # and root's sign-in
    pages = walk(admin, "/audit")
    assert [len(page) for page in pages] == [100, 100, 51]
    ids = [n for page in pages for n in page]
    assert ids == sorted(everything, reverse=True)


def test_paging_keeps_the_filter(admin: FlaskClient, trail: Trail) -> None:
    for _ in range(5):  # the matching rows interleaved with others
        trail.record(50, "pager")
        trail.record(13, "other")
    pages = walk(admin, "/audit?actor=pager")
    assert [len(page) for page in pages] == [100, 100, 50]
    ids = [n for page in pages for n in page]
    assert ids == sorted(trail.ids(actor="pager"), reverse=True)


def test_exactly_a_page_has_no_older_link(admin: FlaskClient, trail: Trail) -> None:
    trail.record(100, "pager")
    body = admin.get("/audit?actor=pager").get_data(as_text=True)
    assert len(ROW_ID.findall(body)) == 100 and "audit-older" not in body


def test_the_repository_reads_one_row_more_to_know_of_a_next_page(
    console_app: Flask, trail: Trail
) -> None:
    from console.audit_query import AuditQuery

    trail.record(3, "pager")
    with Session(engine_of(console_app)) as session:
        page = audit_repository.search_audit(session, AuditQuery(), limit=2)
        assert len(page.rows) == 2 and page.has_next
        assert page.next_before_id == page.rows[-1].id
        rest = audit_repository.search_audit(session, AuditQuery(before_id=page.next_before_id))
        assert len(rest.rows) == 1 and not rest.has_next and rest.next_before_id is None


# -- bad dates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("since", "last tuesday", "Write the time as YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)."),
        ("until", "2024-02-30", "2024-02-30 is not a date and time that exists."),
    ],
)
def test_a_bad_date_is_shown_beside_its_field_with_a_400(
    admin: FlaskClient, trail: Trail, field: str, value: str, message: str
) -> None:
    trail.add("ann")
    response = admin.get("/audit?" + urlencode({field: value, "actor": "ann"}))
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert f'<p class="field-error" id="audit-{field}-error" role="alert">{message}</p>' in page
    assert re.search(rf'name="{field}"\s+value="{value}"[^>]*aria-invalid="true"', page)
    assert 'value="ann"' in page  # the other filters stay
    assert "audit-table" not in page and "audit-export" not in page
    assert admin.get("/audit.csv?" + urlencode({field: value})).status_code == 400


def test_until_before_since_is_refused(admin: FlaskClient) -> None:
    response = admin.get("/audit?since=2024-05-02&until=2024-05-01")
    assert response.status_code == 400
    assert "Until is before since" in response.get_data(as_text=True)


# -- the CSV export ------------------------------------------------------------------------


def export(client: FlaskClient, **args: str) -> list[list[str]]:
    response = client.get("/audit.csv?" + urlencode(args))
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "text/csv"
    assert re.fullmatch(
        r'attachment; filename="audit-\d{8}T\d{6}Z\.csv"', response.headers["Content-Disposition"]
    )
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def test_the_export_is_the_filtered_rows_with_formulas_defused(
    admin: FlaskClient, trail: Trail
) -> None:
    formula = trail.add("=cmd|' /C calc'!A0", "user.created", "+1+1", remote_addr="-2",
                        at="2024-05-01 10:00:00+02", detail={"note": "x"})  # fmt: skip
    at_sign = trail.add("@SUM(A1)", "user.created", "\tTC-1", remote_addr="10.0.0.8")
    trail.add("kim", "login.failed", "bob")
    rows = export(admin, action="user.created")
    assert rows[0] == ["id", "at", "actor", "action", "target", "remote_addr", "detail"]
    assert rows[1:] == [
        [str(at_sign), rows[1][1], "'@SUM(A1)", "user.created", "'\tTC-1", "10.0.0.8", ""],
        [str(formula), "2024-05-01T08:00:00+00:00", "'=cmd|' /C calc'!A0", "user.created",
         "'+1+1", "'-2", '{"note": "x"}'],
    ]  # fmt: skip
    assert datetime.fromisoformat(rows[1][1]).tzinfo == UTC


def test_the_export_ignores_the_page_and_reads_past_its_batches(
    admin: FlaskClient, trail: Trail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_repository, "EXPORT_BATCH", 7)
    trail.record(30, "pager")
    expected = sorted(trail.ids(actor="pager"), reverse=True)
    rows = export(admin, actor="pager", before_id=str(expected[10]))
    assert [int(row[0]) for row in rows[1:]] == expected


def test_the_export_stops_at_its_limit(
    admin: FlaskClient, trail: Trail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_repository, "EXPORT_BATCH", 7)
    monkeypatch.setattr(audit_repository, "EXPORT_MAX", 20)
    trail.record(30, "pager")
    rows = export(admin, actor="pager")
    assert [int(row[0]) for row in rows[1:]] == sorted(trail.ids(actor="pager"), reverse=True)[:20]


def test_the_export_is_audited_with_its_filters(admin: FlaskClient, trail: Trail) -> None:
    trail.add("ann")
    export(admin, actor="ann", since="2024-01-01", before_id="99")
    event = trail.last()
    assert (event.actor, event.action, event.target) == ("root", "audit.exported", "audit log")
    assert event.remote_addr == "127.0.0.1"
    assert event.detail == {"filters": {"actor": "ann", "since": "2024-01-01"},
                            "max_rows": 100_000}  # fmt: skip


def test_the_page_links_to_the_export_of_its_filter(admin: FlaskClient) -> None:
    page = admin.get("/audit?actor=ann&before_id=5").get_data(as_text=True)
    assert 'id="audit-export" href="/audit.csv?actor=ann"' in page


# -- who may -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["operator", "support", "viewer"])
@pytest.mark.parametrize("path", ["/audit", "/audit?actor=ann", "/audit.csv"])
def test_only_admins_search_or_export(
    client: FlaskClient, trail: Trail, make_user: Callable[..., str], role: str, path: str
) -> None:
    make_user("ann", role)
    sign_in(client, "ann")
    response = client.get(path)
    assert response.status_code == 403
    assert "Not allowed" in response.get_data(as_text=True)
    assert trail.ids(action="audit.exported") == set()


@pytest.mark.parametrize("path", ["/audit", "/audit.csv"])
def test_signed_out_visitors_are_sent_to_sign_in(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
