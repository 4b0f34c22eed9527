"""Storm incidents against a real PostgreSQL: notified at open, summarised, closed, all counted.

The sweep raises the alerts (as in the daemon); ``incident_tick`` is then called with
a later ``now`` to stand for the sweep minutes or an hour on, so the schedule is
tested without waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ingest.alerts.config import DEFAULT_RULES, AlertConfig, parse_alert_config
from ingest.alerts.incidents import TickResult, incident_tick
from ingest.sweep import sweep_once

pytestmark = pytest.mark.integration

STORM = {
    "max_alerts_per_minute": 20,
    "window_s": 60,
    "settle_s": 30,
    "summary_interval_s": 300,
    "quiet_s": 300,
    "max_duration_s": 3600,
}
ROUTES = [
    {"name": "ops", "min_severity": "warning", "email": ["ops@example.com"]},
    # Bolt's desk wants each of its alerts, storm or not.
    {"name": "bolt-desk", "customer": "Bolt", "email": ["desk@bolt.example"], "incidents": False},
]


def storm_config(**storm: float) -> AlertConfig:
    raw = {**DEFAULT_RULES, "storm": {**STORM, **storm}, "route": ROUTES}
    return parse_alert_config(raw, {})


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO customer (name) VALUES ('Acme'), ('Bolt')")
        yield conn


class Fleet:
    """Terminals that drop offline; each sweep raises their alerts as the daemon does."""

    def __init__(self, database_url: str, db: psycopg.Connection[Any], cfg: AlertConfig) -> None:
        self.database_url, self.db, self.cfg = database_url, db, cfg
        self.count = 0

    def drop(self, n: int, customer: str = "Acme") -> None:
        for _ in range(n):
            self.count += 1
            self.db.execute(
                "INSERT INTO terminal (serial, customer_id, model, status, status_reason,"
                " last_seen_at, status_changed_at) SELECT %s, id, 'TC-200', 'offline',"
                " 'agent disconnected', now(), now() - interval '1 second'"
                " FROM customer WHERE name = %s",
                (f"TC-ST{self.count:04d}", customer),
            )
        self.sweep()

    def sweep(self) -> None:
        async def go() -> None:
            async with await psycopg.AsyncConnection.connect(
                self.database_url, autocommit=True
            ) as conn:
                await sweep_once(conn, self.cfg, datetime.now(UTC))

        asyncio.run(go())

    def tick(self, now: datetime) -> TickResult:
        """The sweep's incident step, at ``now``."""

        async def go() -> TickResult:
            conn = await psycopg.AsyncConnection.connect(self.database_url)
            async with conn, conn.transaction():
                return await incident_tick(conn, self.cfg, now)

        return asyncio.run(go())

    def opened_at(self, incident_id: int) -> datetime:
        row = self.db.execute("SELECT opened_at FROM incident WHERE id = %s", (incident_id,))
        opened = row.fetchone()
        assert opened is not None
        return opened[0]  # type: ignore[no-any-return]

    def notices(self, incident_id: int) -> list[dict[str, Any]]:
        """The incident's notifications, one per event (rows per route are one each)."""
        rows = self.db.execute(
            "SELECT DISTINCT ON (payload->>'at') payload FROM notification_outbox"
            " WHERE incident_id = %s ORDER BY payload->>'at', id",
            (incident_id,),
        ).fetchall()
        return [row[0] for row in rows]


def incidents(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT id, status, alert_count FROM incident ORDER BY id").fetchall()


def test_every_alert_of_a_storm_is_notified_alone_or_counted_in_a_queued_notification(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    # Synthetic time jumps past alerts that would keep it busy: quiet_s is long enough
    # here for a summary to come first.
    fleet = Fleet(database_url, db, storm_config(quiet_s=600))
    # A few alerts: each is notified alone.
    fleet.drop(4)
    fleet.drop(1, customer="Bolt")
    assert incidents(db) == []
    # The storm: 30 more in the minute. The 5 before them join the incident too.
    fleet.drop(20)
    fleet.drop(10, customer="Bolt")
    ((first, status, count),) = incidents(db)
    assert (status, count) == ("open", 35)
    opened = fleet.opened_at(first)
    # Settling: not told yet; then told with the count.
    assert fleet.tick(opened + timedelta(seconds=10)).notices == 0
    assert fleet.tick(opened + timedelta(seconds=31)).notices == 1
    # It grows; a summary only once summary_interval_s has passed since.
    fleet.drop(12)
    assert fleet.tick(opened + timedelta(seconds=200)).notices == 0
    assert fleet.tick(opened + timedelta(seconds=331)).notices == 1
    # At max_duration_s it closes with a final summary, though alerts keep coming.
    closed = fleet.tick(opened + timedelta(seconds=3600))
    assert (closed.notices, closed.closed) == (1, 1)
    assert incidents(db) == [(first, "closed", 47)]
    # The storm goes on: a new incident, told when it opens, closed when it goes quiet.
    fleet.drop(25)
    (_, (second, status, count)) = incidents(db)
    assert (status, count) == ("open", 25)
    opened2 = fleet.opened_at(second)
    assert fleet.tick(opened2 + timedelta(seconds=31)).notices == 1
    quiet = fleet.tick(opened2 + timedelta(seconds=601))
    assert (quiet.notices, quiet.closed) == (1, 1)

    told1, told2 = fleet.notices(first), fleet.notices(second)
    assert [(n["event"], n["new_count"], n["alert_count"]) for n in told1] == [
        ("opened", 35, 35),
        ("summary", 12, 47),
        ("closed", 0, 47),
    ]
    assert told1[-1]["close_reason"] == "max-length"
    assert told1[0]["totals"]["customer"] == {"Acme": 24, "Bolt": 11}
    assert told1[1]["new"] == {
        "kind": {"offline": 12},
        "severity": {"critical": 12},
        "customer": {"Acme": 12},
    }
    assert [(n["event"], n["new_count"]) for n in told2] == [("opened", 25), ("closed", 0)]
    assert told2[-1]["close_reason"] == "quiet"

    # The count: every alert was queued alone to a route, or is counted in its
    # incident's notifications, whose new counts add up to the incident's alerts.
    alerts = db.execute("SELECT id, incident_id FROM alert").fetchall()
    assert len(alerts) == 4 + 1 + 30 + 12 + 25
    queued_alone = {
        row[0]
        for row in db.execute(
            "SELECT alert_id FROM notification_outbox"
            " WHERE alert_id IS NOT NULL AND status <> 'merged'"
        )
    }
    for incident_id, told in ((first, told1), (second, told2)):
        members = [a for a, i in alerts if i == incident_id]
        assert sum(n["new_count"] for n in told) == len(members) == told[-1]["alert_count"]
    unaccounted = [a for a, i in alerts if i is None and a not in queued_alone]
    assert unaccounted == []
    # ops was told of the first 5 as part of the incident (their rows were merged);
    # Bolt's desk takes no incidents, so it got each of Bolt's 11 alerts alone.
    by_route = dict(
        db.execute(
            "SELECT route, count(*) FROM notification_outbox WHERE alert_id IS NOT NULL"
            " AND status = 'pending' GROUP BY route"
        ).fetchall()
    )
    assert by_route == {"bolt-desk": 11}
    merged = db.execute(
        "SELECT count(*) FROM notification_outbox WHERE status = 'merged' AND route = 'ops'"
    ).fetchone()
    assert merged == (5,)


def test_an_incident_that_closes_before_it_settles_is_still_told(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    fleet = Fleet(database_url, db, storm_config(settle_s=120, quiet_s=60))
    fleet.drop(25)
    ((incident_id, _, _),) = incidents(db)
    result = fleet.tick(fleet.opened_at(incident_id) + timedelta(seconds=61))
    assert (result.notices, result.closed) == (1, 1)
    (told,) = fleet.notices(incident_id)
    assert (told["event"], told["close_reason"], told["new_count"]) == ("closed", "quiet", 25)


def test_alerts_joining_raise_the_incident_severity_and_its_routes(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    """An incident of warnings goes to a critical-only route once a critical alert joins."""
    routes = [{"name": "pager", "min_severity": "critical", "email": ["pager@example.com"]}]
    raw = {**DEFAULT_RULES, "storm": {**STORM, "settle_s": 0}, "route": routes}
    raw["status"] = [
        {"kind": "error", "severity": "warning", "for_s": 0, "clear_for_s": 60},
        {"kind": "offline", "severity": "critical", "for_s": 0, "clear_for_s": 60},
    ]
    fleet = Fleet(database_url, db, parse_alert_config(raw, {}))
    for n in range(25):
        db.execute(
            "INSERT INTO terminal (serial, customer_id, model, status, status_changed_at)"
            " SELECT %s, id, 'TC-200', 'error', now() FROM customer WHERE name = 'Acme'",
            (f"TC-ERR{n}",),
        )
    fleet.sweep()
    ((incident_id, _, _),) = incidents(db)
    assert db.execute("SELECT severity FROM incident").fetchone() == ("warning",)
    assert fleet.notices(incident_id) == []  # nobody takes warnings
    fleet.drop(1)
    assert db.execute("SELECT severity, alert_count FROM incident").fetchone() == ("critical", 26)
    # The sweep that raised it told the incident's opening (settle_s = 0) to the pager.
    result = fleet.tick(fleet.opened_at(incident_id) + timedelta(seconds=400))
    assert (result.notices, result.closed) == (1, 1)
    told = fleet.notices(incident_id)
    assert [(n["event"], n["severity"], n["new_count"]) for n in told] == [
        ("opened", "critical", 26),
        ("closed", "critical", 0),
    ]
