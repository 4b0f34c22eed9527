"""The reports screens on real PostgreSQL: a customer's and the fleet's monthly report on
screen, as CSV and as PDF, with uptime from the status history checked to the second,
alerts and resolve times, firmware; every role may read, downloads are audited, a bad
month or an unknown customer is refused."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import re
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlmodel import Session, select

from console import report_repository, reports
from console.report_model import WORST_SHOWN, ReportMonth
from console.uptime import UptimeSeconds
from ingest.uptime_snapshots import refresh_uptime_snapshots
from shared.db import libpq_url
from shared.models import AuditEvent, Customer
from shared.uptime_snapshot import MAX_AGE, SQL_SNAPSHOT, UtcMonth, refresh_params
from shared.uptime_sql import FLEET_UPTIME
from tests.fixtures.console import Fleet, sign_in

pytestmark = pytest.mark.integration

DAY = 86_400
MARCH = datetime(2026, 3, 1, tzinfo=UTC)
MONTH = "2026-03"
ACME = "Acme Retail"


@pytest.fixture(autouse=True)
def reports_screens(console_app: Flask) -> Flask:
    """The blueprint on the app until console.app registers it itself."""
    if "reports" not in console_app.blueprints:
        console_app.register_blueprint(reports.bp)
    return console_app


def at(day: float, hour: float = 0) -> datetime:
    """An instant in March 2026 (UTC): ``at(1)`` is its first."""
    return MARCH + timedelta(days=day - 1, hours=hour)


def run(fleet: Fleet, statement: str, **params: Any) -> None:
    with Session(fleet.engine) as session:
        session.execute(text(statement), params)
        session.commit()


def change(fleet: Fleet, serial: str, when: datetime, status: str) -> None:
    run(
        fleet,
        "INSERT INTO status_change (terminal_id, at, new_status, reason)"
        " SELECT id, :at, :status, 'test' FROM terminal WHERE serial = :serial",
        serial=serial, at=when, status=status,
    )  # fmt: skip


def alert(
    fleet: Fleet, serial: str, kind: str, severity: str, raised: datetime, resolve_h: float,
    count: int = 1, incident: int | None = None,
) -> None:  # fmt: skip
    run(
        fleet,
        "INSERT INTO alert (terminal_id, customer_id, scope, kind, severity, status, count,"
        " raised_at, resolved_at, incident_id, message)"
        " SELECT id, customer_id, 'terminal:' || id, :kind, :severity, 'resolved', :count,"
        " :raised, :resolved, :incident, 'test' FROM terminal WHERE serial = :serial",
        serial=serial, kind=kind, severity=severity, count=count, raised=raised,
        resolved=raised + timedelta(hours=resolve_h), incident=incident,
    )  # fmt: skip


@pytest.fixture
def march(fleet: Fleet) -> Fleet:
    """Acme Retail's March 2026: four terminals in two stores, one gone before March,
    and Beta Foods' one terminal, online all month."""
    for serial, store in (("TC-A1", "S001"), ("TC-A2", "S001"), ("TC-A3", "S002"),
                          ("TC-A4", "S002"), ("TC-A5", "S002")):  # fmt: skip
        fleet.add_terminal(serial, customer=ACME, store=store)
    fleet.add_terminal("TC-B1", customer="Beta Foods", store="B01")
    run(fleet, "UPDATE terminal SET created_at = '2025-06-01T00:00:00Z'")
    run(fleet, "UPDATE store SET name = '=SUM(A1:A9)' WHERE code = 'S002'")
    # A1: online since February, offline for exactly one day (10th), a change in April.
    change(fleet, "TC-A1", datetime(2026, 2, 20, tzinfo=UTC), "online")
    change(fleet, "TC-A1", at(10), "offline")
    change(fleet, "TC-A1", at(11), "online")
    change(fleet, "TC-A1", datetime(2026, 4, 5, tzinfo=UTC), "offline")
    # A2: installed on the 16th, online from that very instant.
    run(fleet, "UPDATE terminal SET installed_at = :at WHERE serial = 'TC-A2'", at=at(16))
    change(fleet, "TC-A2", at(16), "online")
    # A3: online since January, error from the 11th, decommissioned on the 21st.
    run(
        fleet,
        "UPDATE terminal SET decommissioned_at = :at, status = 'decommissioned'"
        " WHERE serial = 'TC-A3'",
        at=at(21),
    )
    change(fleet, "TC-A3", datetime(2026, 1, 1, tzinfo=UTC), "online")
    change(fleet, "TC-A3", at(11), "error")
    change(fleet, "TC-A3", at(21), "decommissioned")
    # A4: never a change: unknown, never online. Other firmware.
    run(fleet, "UPDATE terminal SET firmware_version = '2.5.0' WHERE serial = 'TC-A4'")
    # A5: decommissioned in January: not in March's report at all.
    run(
        fleet,
        "UPDATE terminal SET decommissioned_at = '2026-01-31T00:00:00Z',"
        " status = 'decommissioned' WHERE serial = 'TC-A5'",
    )
    change(fleet, "TC-A5", datetime(2026, 1, 1, tzinfo=UTC), "online")
    change(fleet, "TC-B1", datetime(2026, 1, 1, tzinfo=UTC), "online")
    run(
        fleet,
        "INSERT INTO incident (id, status, severity, summary, alert_count, opened_at)"
        " VALUES (7, 'closed', 'critical', 'storm', 1, :at)",
        at=at(10),
    )
    alert(fleet, "TC-A1", "offline", "major", at(10, 0.1), 1, count=3, incident=7)
    alert(fleet, "TC-A1", "offline", "major", at(20), 3, count=2)
    alert(fleet, "TC-A3", "error", "critical", at(11), 2)
    alert(fleet, "TC-A1", "offline", "major", datetime(2026, 2, 10, tzinfo=UTC), 1)  # February
    alert(fleet, "TC-B1", "cpu_high", "warning", at(5), 0.5, count=4)
    return fleet


def as_role(client: FlaskClient, make_user: Callable[..., str], role: str) -> FlaskClient:
    sign_in(client, make_user(f"{role}-user", role))
    return client


@pytest.fixture
def viewer(client: FlaskClient, make_user: Callable[..., str]) -> FlaskClient:
    return as_role(client, make_user, "viewer")


def build(fleet: Fleet, customer: str | None, month: str = MONTH) -> Any:
    now = datetime.now(UTC)
    with Session(fleet.engine) as session:
        owner = None
        if customer is not None:
            owner = report_repository.customer_named(session, customer)
            assert owner is not None
        return report_repository.build_report(session, ReportMonth.parse(month, now), owner, now)


# -- the numbers -----------------------------------------------------------------------------


def test_customer_uptime_per_terminal_and_store_to_the_second(march: Fleet) -> None:
    report = build(march, ACME)
    terminals = {t.serial: t.seconds for t in report.terminals}
    assert terminals == {
        "TC-A1": UptimeSeconds(30 * DAY, 31 * DAY),
        "TC-A2": UptimeSeconds(16 * DAY, 16 * DAY),
        "TC-A3": UptimeSeconds(10 * DAY, 20 * DAY),
        "TC-A4": UptimeSeconds(0, 31 * DAY),
    }
    stores = {g.store_code: (g.terminals, g.seconds) for g in report.stores}
    assert stores == {
        "S001": (2, UptimeSeconds(46 * DAY, 47 * DAY)),
        "S002": (2, UptimeSeconds(10 * DAY, 51 * DAY)),
    }
    assert report.total == UptimeSeconds(56 * DAY, 98 * DAY)
    assert report.terminals_counted == 4
    assert report.customers == []
    assert not report.in_progress


def test_customer_alerts_resolve_times_incidents_firmware(march: Fleet) -> None:
    report = build(march, ACME)
    counts = {(a.kind, a.severity): (a.alerts, a.occurrences) for a in report.alerts}
    assert counts == {("offline", "major"): (2, 5), ("error", "critical"): (1, 1)}
    # 1 h, 2 h, 3 h: the median is 2 h; p90 interpolates to 2.8 h.
    assert report.resolve.resolved == 3
    assert report.resolve.median_s == pytest.approx(2 * 3600)
    assert report.resolve.p90_s == pytest.approx(2.8 * 3600)
    assert (report.incidents.incidents, report.incidents.alerts_grouped) == (1, 1)
    assert {f.version: f.terminals for f in report.firmware} == {"2.4.1": 2, "2.5.0": 1}
    top = [(t.serial, t.alerts, t.occurrences) for t in report.top_alerting]
    assert top == [("TC-A1", 2, 5), ("TC-A3", 1, 1)]


def test_the_fleet_sums_per_customer_and_lists_the_worst(march: Fleet) -> None:
    report = build(march, None)
    customers = {g.customer: (g.terminals, g.seconds) for g in report.customers}
    assert customers == {
        ACME: (4, UptimeSeconds(56 * DAY, 98 * DAY)),
        "Beta Foods": (1, UptimeSeconds(31 * DAY, 31 * DAY)),
    }
    assert report.total == UptimeSeconds(87 * DAY, 129 * DAY)
    assert [t.serial for t in report.terminals][:3] == ["TC-A4", "TC-A3", "TC-A1"]
    assert report.top_alerting[0].serial == "TC-A1"
    assert ("cpu_high", "warning") in {(a.kind, a.severity) for a in report.alerts}


def snapshot(fleet: Fleet, month: str) -> Any:
    with Session(fleet.engine) as session:
        return session.execute(text(SQL_SNAPSHOT), {"month": month, "with_stores": True}).first()


def test_the_fleet_report_keeps_its_uptime_and_forgets_it_on_a_rename(march: Fleet) -> None:
    first = build(march, None)
    kept = snapshot(march, MONTH)
    assert kept is not None and kept.through == at(32)
    # A settled month is read back, not worked out again: a planted figure shows.
    planted = [
        [*row[:8], row[9] / 2, row[9]] if row[1] == "Beta Foods" else row for row in kept.rows
    ]
    run(
        march,
        "UPDATE fleet_uptime_snapshot SET rows = CAST(:rows AS jsonb) WHERE month = :month",
        rows=json.dumps(planted), month=MONTH,
    )  # fmt: skip
    again = build(march, None)
    beta = {g.customer: g.seconds for g in again.customers}["Beta Foods"]
    assert beta == UptimeSeconds(15.5 * DAY, 31 * DAY)
    assert again.uptime_through is None  # the whole month, not a part of it
    # A rename makes every snapshot stale: the month is worked out again, new name and all.
    run(march, "UPDATE customer SET name = 'Beta Food Stores' WHERE name = 'Beta Foods'")
    assert snapshot(march, MONTH) is None
    renamed = {g.customer: g.seconds for g in build(march, None).customers}
    assert renamed["Beta Food Stores"] == UptimeSeconds(31 * DAY, 31 * DAY)
    assert first.total == build(march, None).total
    # A heartbeat (status, times, metrics) forgets nothing.
    run(march, "UPDATE terminal SET status = 'offline', last_heartbeat_at = now()")
    assert snapshot(march, MONTH) is not None


def numbers_as_float(row: Any) -> tuple[Any, ...]:
    """JSON keeps 86400.0 as 86400: compare the figures as numbers."""
    return tuple(float(v) if isinstance(v, int | float) else v for v in row)


async def _ingest_refresh(url: str, now: datetime) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await refresh_uptime_snapshots(conn, now)


def test_ingest_keeps_the_month_in_progress_and_the_console_reads_it(
    march: Fleet, viewer: FlaskClient
) -> None:
    now = datetime.now(UTC)
    current = UtcMonth.of(now)
    url = libpq_url(march.engine.url.render_as_string(hide_password=False))
    refreshed = asyncio.run(_ingest_refresh(url, now))
    assert refreshed[0] == current.key
    kept = snapshot(march, current.key)
    assert kept is not None and kept.through == now
    # What ingest kept is what the report works out itself.
    with Session(march.engine) as session:
        live = session.execute(
            text(FLEET_UPTIME), {**refresh_params(current, now), "worst": WORST_SHOWN}
        ).all()
    assert kept.stores and all(row[0] == "store" for row in kept.stores)
    assert sorted(map(numbers_as_float, [*kept.rows, *kept.stores]), key=repr) == sorted(
        map(numbers_as_float, live), key=repr
    )
    report = build(march, None, current.key)
    assert report.uptime_through == now  # the snapshot's, a moment ago
    page = viewer.get(f"/reports/{current.key}").get_data(as_text=True)
    assert 'id="uptime-through"' in page
    # Older than MAX_AGE: the console works the month out again and keeps it.
    run(
        march,
        "UPDATE fleet_uptime_snapshot SET computed_at = computed_at - :age WHERE month = :m",
        age=MAX_AGE, m=current.key,
    )  # fmt: skip
    report = build(march, None, current.key)
    assert report.uptime_through is None
    fresh = snapshot(march, current.key)
    assert fresh is not None and fresh.through > now


def test_a_customer_month_runs_on_its_time_zone(march: Fleet) -> None:
    run(march, "UPDATE customer SET timezone = 'Pacific/Auckland' WHERE name = :n", n=ACME)
    report = build(march, ACME)
    # March 1st in Auckland (UTC+13 in summer) begins on February 28th, 11:00 UTC.
    assert report.start == datetime(2026, 2, 28, 11, tzinfo=UTC)
    assert report.timezone == "Pacific/Auckland"
    assert {t.serial: t.seconds.online for t in report.terminals}["TC-A1"] == (
        report.end - report.start
    ).total_seconds() - DAY


def test_the_month_in_progress_ends_now(march: Fleet) -> None:
    now = datetime.now(UTC)
    current = ReportMonth.of(now)
    report = build(march, "Beta Foods", current.key)
    assert report.in_progress
    (b1,) = report.terminals
    assert b1.seconds.online == b1.seconds.in_service
    assert b1.seconds.in_service <= (now - report.start).total_seconds() + 1


# -- the page ------------------------------------------------------------------------------


def test_the_customer_page_shows_the_figures(march: Fleet, viewer: FlaskClient) -> None:
    response = viewer.get(f"/reports/{MONTH}", query_string={"customer": ACME})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Acme Retail: March 2026" in page
    summary = page[page.index('id="summary-uptime"') :][:40]
    assert "57.14%" in summary
    for figure in ("96.77%", "100.00%", "50.00%", "0.00%", "97.87%", "19.61%"):
        assert figure in page
    assert "median 2.0 h" in page and "2.8 h" in page
    assert 'id="uptime-bars"' in page and "<rect" in page
    assert "style=" not in page.split("<main", 1)[1]  # the CSP forbids inline styles
    assert "TC-A5" not in page
    assert "TC-B1" not in page


def test_the_fleet_page(march: Fleet, viewer: FlaskClient) -> None:
    response = viewer.get(f"/reports/{MONTH}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "The whole fleet: March 2026" in page
    assert "Beta Foods" in page and "67.44%" in page  # 87 of 129 days


def test_the_picker_defaults_to_the_last_full_month(viewer: FlaskClient) -> None:
    page = viewer.get("/reports").get_data(as_text=True)
    default = ReportMonth.last_full(datetime.now(UTC))
    assert f'value="{default.key}"' in page
    assert f"/reports/{default.key}" in page


def test_the_picker_leads_to_the_report_or_says_what_is_wrong(
    march: Fleet, viewer: FlaskClient
) -> None:
    response = viewer.get("/reports", query_string={"month": MONTH, "customer": ACME})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/reports/{MONTH}?customer=Acme+Retail"
    response = viewer.get("/reports", query_string={"month": "2026-13", "customer": "Nobody"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'id="report-month-error"' in page and "01 to 12" in page
    assert 'id="report-customer-error"' in page and 'aria-invalid="true"' in page


# -- the files -----------------------------------------------------------------------------


def exports(fleet: Fleet) -> list[AuditEvent]:
    with Session(fleet.engine) as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.action == "report.exported"))
        return list(rows)


def test_the_customer_csv_has_a_row_per_terminal(march: Fleet, viewer: FlaskClient) -> None:
    response = viewer.get(f"/reports/{MONTH}.csv", query_string={"customer": ACME})
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="tms-report-acme-retail-2026-03.csv"'
    )
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["serial", "store_code", "store_name", "status", "firmware",
                       "online_s", "in_service_s", "uptime_pct"]  # fmt: skip
    by_serial = {row[0]: row for row in rows[1:]}
    assert set(by_serial) == {"TC-A1", "TC-A2", "TC-A3", "TC-A4"}
    assert by_serial["TC-A1"][5:] == [str(30 * DAY), str(31 * DAY), "96.7742"]
    assert by_serial["TC-A3"][2:] == ["'=SUM(A1:A9)", "decommissioned", "2.4.1",
                                      str(10 * DAY), str(20 * DAY), "50.0000"]  # fmt: skip
    assert by_serial["TC-A4"][5:] == ["0", str(31 * DAY), "0.0000"]
    (event,) = exports(march)
    assert event.actor == "viewer-user"
    assert event.target == ACME
    assert event.detail == {"format": "csv", "month": MONTH, "customer": ACME}


def test_the_fleet_csv_has_a_row_per_store(march: Fleet, viewer: FlaskClient) -> None:
    response = viewer.get(f"/reports/{MONTH}.csv")
    assert response.status_code == 200
    assert "tms-report-fleet-2026-03.csv" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:4] == ["customer", "store_code", "store_name", "terminals"]
    assert rows[1:] == [
        [ACME, "S001", "Store S001", "2", str(46 * DAY), str(47 * DAY), "97.8723"],
        [ACME, "S002", "'=SUM(A1:A9)", "2", str(10 * DAY), str(51 * DAY), "19.6078"],
        ["Beta Foods", "B01", "Store B01", "1", str(31 * DAY), str(31 * DAY), "100.0000"],
    ]
    (event,) = exports(march)
    assert event.target == "fleet"
    assert event.detail == {"format": "csv", "month": MONTH, "customer": None}


def pdf_text(data: bytes) -> bytes:
    """The PDF's content streams, decoded (ReportLab writes ASCII85 over Flate)."""
    pieces = []
    streams = rb"/Filter \[ /ASCII85Decode /FlateDecode \].*?stream\r?\n(.*?)endstream"
    for match in re.finditer(streams, data, re.S):
        raw = match.group(1).strip()
        raw = raw.removeprefix(b"<~").removesuffix(b"~>")
        pieces.append(zlib.decompress(base64.a85decode(raw)))
    assert pieces, "no content streams found"
    return b"\n".join(pieces)


def test_the_customer_pdf(march: Fleet, viewer: FlaskClient) -> None:
    response = viewer.get(f"/reports/{MONTH}.pdf", query_string={"customer": ACME})
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="tms-report-acme-retail-2026-03.pdf"'
    )
    data = response.get_data()
    assert data.startswith(b"%PDF-")
    content = pdf_text(data)
    assert b"(Acme Retail) Tj" in content
    assert b"March 2026" in content
    assert b"57.14%" in content  # the summary's uptime
    assert b"96.77%" in content  # TC-A1's
    assert b"TC-A4" in content
    (event,) = exports(march)
    assert event.detail == {"format": "pdf", "month": MONTH, "customer": ACME}


def test_a_pdf_of_hostile_names_is_still_a_pdf(march: Fleet, viewer: FlaskClient) -> None:
    name = '<b>Ünïcode & "quotes"</b> 👩‍👩‍👧 \u202e\u2028 {{ 7*7 }}'
    run(march, "UPDATE customer SET name = :n WHERE name = :old", n=name, old=ACME)
    run(march, "UPDATE terminal SET serial = '<para>' WHERE serial = 'TC-A1'")
    response = viewer.get(f"/reports/{MONTH}.pdf", query_string={"customer": name})
    assert response.status_code == 200
    assert response.get_data().startswith(b"%PDF-")
    assert (
        "tms-report-b-unicode-quotes-b-7-7-2026-03.pdf" in response.headers["Content-Disposition"]
    )
    page = viewer.get(f"/reports/{MONTH}", query_string={"customer": name})
    assert page.status_code == 200
    assert "<para>" not in page.get_data(as_text=True)


# -- who may, and what is refused ----------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "operator", "support", "viewer"])
def test_every_role_may_read_and_download(
    march: Fleet, client: FlaskClient, make_user: Callable[..., str], role: str
) -> None:
    as_role(client, make_user, role)
    for path in ("/reports", f"/reports/{MONTH}", f"/reports/{MONTH}.csv", f"/reports/{MONTH}.pdf"):
        response = client.get(path, query_string={"customer": ACME})
        assert response.status_code in (200, 302), path


def test_anonymous_is_sent_to_sign_in(march: Fleet, client: FlaskClient) -> None:
    for path in ("/reports", f"/reports/{MONTH}", f"/reports/{MONTH}.csv", f"/reports/{MONTH}.pdf"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert "/login" in response.headers["Location"]
    assert exports(march) == []


@pytest.mark.parametrize(
    ("month", "says"),
    [
        ("2026-13", "01 to 12"),
        ("2026-00", "01 to 12"),
        ("0000-01", "before 2000"),
        ("1999-12", "before 2000"),
        ("9999-01", "not begun"),
        ("2026-3", "YYYY-MM"),
        ("march", "YYYY-MM"),
        ("２０２６-03", "YYYY-MM"),  # full-width digits: \d would take them
    ],
)
def test_a_bad_month_is_a_404_that_says_why(
    march: Fleet, viewer: FlaskClient, month: str, says: str
) -> None:
    for suffix in ("", ".csv", ".pdf"):
        response = viewer.get(f"/reports/{month}{suffix}")
        assert response.status_code == 404, (month, suffix)
        assert says in response.get_data(as_text=True)
    assert exports(march) == []


def test_next_month_is_refused(viewer: FlaskClient) -> None:
    following = ReportMonth.of(datetime.now(UTC) + timedelta(days=40))
    response = viewer.get(f"/reports/{following.key}")
    assert response.status_code == 404
    assert "not begun" in response.get_data(as_text=True)


def test_an_unknown_customer_is_a_404(march: Fleet, viewer: FlaskClient) -> None:
    for suffix in ("", ".csv", ".pdf"):
        response = viewer.get(f"/reports/{MONTH}{suffix}", query_string={"customer": "Nobody"})
        assert response.status_code == 404
        assert "no customer called &#39;Nobody&#39;" in response.get_data(as_text=True)
    assert exports(march) == []


def test_a_customer_without_terminals_has_an_empty_report(
    fleet: Fleet, viewer: FlaskClient
) -> None:
    with Session(fleet.engine) as session:
        session.add(Customer(name="Empty Ltd"))
        session.commit()
    for suffix in ("", ".csv", ".pdf"):
        response = viewer.get(f"/reports/{MONTH}{suffix}", query_string={"customer": "Empty Ltd"})
        assert response.status_code == 200, suffix
    page = viewer.get(f"/reports/{MONTH}", query_string={"customer": "Empty Ltd"})
    assert "No terminal in service this month." in page.get_data(as_text=True)
