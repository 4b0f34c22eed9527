"""Every console page and API route against the worst values the schema lets PostgreSQL hold.

Rows are written straight into the database, past ingest's checks: strings at their
column's full length made of HTML, quotes, right-to-left marks, emoji, combining marks
and long words; numbers at their limits (NaN and infinities where a float column takes
them, integer and bigint extremes); timestamps from 4713 BC to 294276 AD and
+-infinity; NULL wherever allowed; JSON that is deep, huge, or not the shape code
expects; hundreds of rows where a page lists them. Then every route in the app's
``url_map`` is opened, as each role, with the stored ids filled in: a route added
later is covered without touching this file (or fails here, asking for values for a
new kind of URL argument). No answer may be a 500, HTML must escape what it shows,
JSON must be strict JSON.
"""

from __future__ import annotations

import base64
import json
import math
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import cycle, product
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session
from werkzeug.routing import BuildError, Rule
from werkzeug.test import TestResponse

from console import users
from console.db import engine_of
from console.report_model import ReportMonth
from console.stored_values import CUT_JSON, MAX_JSON_DEPTH, UNREADABLE_JSON
from shared.command_catalog import CATALOG
from shared.command_states import CommandState
from shared.credentials import hash_secret
from shared.db import libpq_url
from tests.fixtures.console import csrf_of, diagnostics_result, sign_in

pytestmark = pytest.mark.integration

# -- the worst values --------------------------------------------------------------------

XSS = '<script>alert("tms-xss")</script>'
# The terminal whose agent opens the firmware download routes (console.firmware_download).
AGENT_USER = "TC-AGENT"
AGENT_SECRET = "agent-secret-for-the-worst-values"
# Text that must never reach a page unescaped (the base template's own <script src=...>
# does not match).
RAW_MARKERS = ("<script>alert", "<img src=x")
PIECES = (
    XSS,
    "\"'><img src=x onerror=alert('tms-xss')>",
    "\u202e\u200f",  # right-to-left override and mark
    "👩‍👩‍👧‍👦🇺🇦",  # a ZWJ family and a flag: several code points each
    "Z\u0335\u0321\u0322\u031b\u0300\u0301\u0302\u0303\u0304",  # stacked combining marks
    "{{ 7*7 }}{% raw %}",  # template syntax
    "%s %(x)s \\u0000 %00 &amp; &lt;",  # format strings, escapes, entities
    "\ufeff\u2028\u2029\t\r\n",  # BOM, line and paragraph separators, control characters
)


def hostile(length: int, tag: str = "", *, slash: bool = True) -> str:
    """``length`` characters (PostgreSQL counts code points, like ``len``): ``tag`` to keep
    it unique, every piece above, then one word without spaces. ``slash=False`` for a
    value that must still route as one URL segment."""
    text = tag + "".join(PIECES)
    if not slash:
        text = text.replace("/", "\u2215")
    return (text + "Ω" * max(0, length - len(text)))[:length]


# Extremes a timestamptz column takes; psycopg reads only years 1 to 9999.
YEAR_1 = "0001-01-01 00:00:00+00"
YEAR_9999 = "9999-12-31 23:59:59.999999+00"
YEAR_1_BC = "0001-12-31 23:59:59+00 BC"  # what finding 4's "+23:59" heartbeat stored
EARLIEST = "4713-01-01 00:00:00+00 BC"
LATEST = "294276-12-31 23:59:59.999999+00"
TIMES = (YEAR_1, YEAR_9999, YEAR_1_BC, EARLIEST, LATEST, "infinity", "-infinity")
FLOATS = (
    math.nan,
    math.inf,
    -math.inf,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    5e-324,
    -0.0,
    0.0,
)
INT_MAX, INT_MIN = 2**31 - 1, -(2**31)
BIGINT_MAX, BIGINT_MIN = 2**63 - 1, -(2**63)


def deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


# JSON the jsonb columns accept, as text (json.dumps cannot build some of them).
ODD_JSON = {
    "null-object": None,  # SQL NULL
    "json-null": "null",
    "empty": "{}",
    "array": '[1, "two", null, true, {}, []]',
    "string": json.dumps(hostile(500), ensure_ascii=False),
    "number": "-0",
    "boolean": "true",
    "wide-number": "1e1000",  # PostgreSQL keeps it as a 1001-digit integer
    "long-integer": "7" * 5000,  # beyond Python's 4300-digit int conversion limit
    "deep-readable": deep(500),
    "deep-unreadable": "[" * 3000 + "]" * 3000,  # beyond Python's recursion limit
    "hostile-keys": json.dumps(
        {
            hostile(100, "k"): hostile(1000),
            "lines": [hostile(300)] * 3 + [None, 7, {"x": []}],
            "log_tail": hostile(300),
            "log": [1, 2],
            "written": {hostile(30): hostile(30), "n": 1e308},
            "checks": {"not": "a list"},
        },
        ensure_ascii=False,
    ),
}
HUGE_JSON = json.dumps(
    {"lines": [hostile(100, f"{n} ") for n in range(40_000)]}, ensure_ascii=False
)


def odd_check(number: int) -> dict[str, Any]:
    return {
        "id": f"c{number:02d}" + "x" * 60,
        "title": hostile(200),
        "outcome": ("failed", "warning", "passed", "skipped")[number % 4],
        "summary": hostile(1000),
        "data": {
            hostile(50, "d"): json.loads(deep(40)),
            "huge": 1e308,
            "neg": -1,
            "list": [hostile(10)] * 50,
            "flag": True,
            "none": None,
            "mixed": [1, "a", {"b": [None]}],
        },
        "duration_ms": 1e308,
    }


DIAGNOSTICS = {
    "full": json.dumps(diagnostics_result()),
    "no-checks": '{"checks": []}',
    "checks-null": '{"checks": null}',
    "checks-text": '{"checks": "x"}',
    "check-missing-fields": '{"checks": [{"id": "usb_link"}]}',
    "worst": json.dumps(
        {
            "checks": [odd_check(n) for n in range(100)],
            "started_at": "0001-01-01T00:00:00+00:00",
            "finished_at": "0001-01-01T00:00:00+23:59",  # before year 1 in UTC
            "log_tail": [hostile(1000, f"{n} ") for n in range(200)],
        },
        ensure_ascii=False,
    ),
    "far-future": json.dumps(
        {"checks": [], "finished_at": "9999-12-31T23:59:59-23:59"}  # after 9999 in UTC
    ),
    "log-tail-text": json.dumps({"checks": [], "log_tail": "not a list"}),
}


@dataclass
class Stored:
    """The ids of the stored rows, to fill the routes' URL arguments with."""

    serials: list[str] = field(default_factory=list)
    command_ids: list[str] = field(default_factory=list)
    bulk_ids: list[int] = field(default_factory=list)
    alert_ids: list[int] = field(default_factory=list)
    customer: str = ""
    store: str = ""
    firmware: str = ""
    reason: str = ""
    username: str = ""
    # A hostile-named user with tokens, and the ids of theirs; customers and stores.
    usernames: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    customer_ids: list[int] = field(default_factory=list)
    store_ids: list[int] = field(default_factory=list)
    rollout_ids: list[int] = field(default_factory=list)
    # A command on TC-ODD per kind of result above: its name -> the command's id.
    command_with: dict[str, str] = field(default_factory=dict)


# -- storing them --------------------------------------------------------------------------


def _one(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def _store_fleet(conn: psycopg.Connection[Any], stored: Stored) -> dict[str, int]:
    """Customers, stores and terminals: the hostile ones, and 2,000 more to list."""
    stored.customer = hostile(200, "C0 ")
    stored.store = hostile(64, "S0 ")
    stored.firmware = hostile(64, "F0 ")
    customers = [
        _one(
            conn, "INSERT INTO customer (name, created_at) VALUES (%s, %s) RETURNING id", (name, at)
        )
        for name, at in ((stored.customer, EARLIEST), ("", LATEST), ("Plain", YEAR_1))
    ]
    many = conn.execute(
        "INSERT INTO customer (name, created_at) SELECT %s || n, %s"
        " FROM generate_series(1, 1000) n RETURNING id",
        (hostile(196, "C+ "), YEAR_9999),
    ).fetchall()
    customers += [row[0] for row in many]
    store = _one(
        conn,
        "INSERT INTO store (customer_id, code, name, timezone, created_at)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (customers[0], stored.store, hostile(200), hostile(64), "-infinity"),
    )
    nameless = _one(
        conn,
        "INSERT INTO store (customer_id, code, name, timezone) VALUES (%s, '', '', '')"
        " RETURNING id",
        (customers[1],),
    )
    terminals = {
        # serial: (customer, store, status, text, timestamps, float, uptime)
        hostile(64, "T/"): (0, store, hostile(32), True, YEAR_1_BC, math.nan, BIGINT_MAX),
        hostile(64, "T1 ", slash=False): (
            0,
            store,
            "error",
            True,
            "infinity",
            math.inf,
            BIGINT_MIN,
        ),
        "TC-NULLS": (1, None, "", False, None, None, None),
        "TC-MANY": (2, nameless, "online", True, YEAR_9999, 1.7976931348623157e308, 0),
        "TC-ODD": (2, None, "offline", True, "-infinity", -math.inf, -1),
        "0": (2, store, "unknown", False, YEAR_1, -0.0, 1),
        "": (1, nameless, "decommissioned", True, EARLIEST, 5e-324, None),
    }
    ids = {}
    for serial, (owner, store_id, status, texts, at, number, uptime) in terminals.items():
        ids[serial] = _one(
            conn,
            "INSERT INTO terminal (serial, customer_id, store_id, model, status, status_reason,"
            " status_changed_at, device_status, firmware_version, last_heartbeat_at,"
            " last_seen_at, cpu_pct, memory_pct, disk_pct, host_name, host_cpu_pct,"
            " host_memory_pct, host_disk_pct, uptime_s, created_at, decommissioned_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s) RETURNING id",
            (
                serial,
                customers[owner],
                store_id,
                hostile(64) if texts else "",
                status,
                hostile(200) if texts else None,
                at,
                hostile(32) if texts else None,
                stored.firmware if texts else None,
                at,
                at,
                number,
                number,
                number,
                hostile(200) if texts else None,
                number,
                number,
                number,
                uptime,
                at or YEAR_1,
                at,
            ),
        )
        stored.serials.append(serial)
    # Enough terminals for several pages, spread over the customers, each status.
    conn.execute(
        "INSERT INTO terminal (serial, customer_id, model, status, last_heartbeat_at, cpu_pct)"
        " SELECT 'TC-F' || lpad(n::text, 5, '0'), (%s::int[])[1 + n %% 1000],"
        " 'TC-200', (ARRAY['online', 'offline', 'error', 'unknown'])[1 + n %% 4],"
        " now() - make_interval(secs => n), n %% 101 FROM generate_series(1, 2000) n",
        (customers[3:],),
    )
    return ids


def _store_history(conn: psycopg.Connection[Any], ids: dict[str, int]) -> None:
    """Status changes, terminal log and telemetry: 500 rows on TC-MANY, extremes elsewhere."""
    many = ids["TC-MANY"]
    conn.execute(
        "INSERT INTO status_change (terminal_id, at, old_status, new_status, reason)"
        " SELECT %s, now() - make_interval(secs => n), NULL, %s, %s"
        " FROM generate_series(1, 500) n",
        (many, hostile(32), hostile(200)),
    )
    conn.execute(
        "INSERT INTO terminal_log (terminal_id, at, kind, severity, code, message, source_id,"
        " data) SELECT %s, now() - make_interval(secs => n), 'event', 'error', %s, %s, NULL,"
        " NULL FROM generate_series(1, 500) n",
        (many, hostile(200), hostile(2000)),
    )
    for serial, terminal in ids.items():
        log_sources = (hostile(64, f"L{terminal}/"), hostile(64, f"L{terminal} ", slash=False))
        for at, source, data, kind in zip(
            TIMES,
            cycle((*log_sources, "" if serial == "TC-MANY" else None, None)),
            cycle(ODD_JSON.values()),
            cycle(("command", hostile(16))),
            strict=False,
        ):
            conn.execute(
                "INSERT INTO status_change (terminal_id, at, old_status, new_status, reason)"
                " VALUES (%s, %s, %s, %s, %s)",
                (terminal, at, hostile(32) if serial else None, "", hostile(200)),
            )
            conn.execute(
                "INSERT INTO terminal_log (terminal_id, at, received_at, kind, severity, code,"
                " message, source_id, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
                (terminal, at, at, kind, hostile(16), hostile(200), hostile(2000), source, data),
            )
            conn.execute(
                "INSERT INTO telemetry (terminal_id, message_id, ts, received_at, device_status,"
                " firmware_version, cpu_pct, memory_pct, disk_pct, host_cpu_pct,"
                " host_memory_pct, host_disk_pct, errors) VALUES (%s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s, %s, %s, %s::jsonb)",
                (
                    terminal,
                    hostile(64, f"{terminal} {at}"),
                    at,
                    at,
                    hostile(32),
                    hostile(64),
                    *FLOATS[:6],
                    data,
                ),
            )
            conn.execute(
                "INSERT INTO telemetry_hourly VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s)",
                (terminal, at, INT_MAX, INT_MIN, *FLOATS, math.nan),
            )
        conn.execute(
            "INSERT INTO telemetry (terminal_id, message_id, ts, device_status)"
            " SELECT %s, 'm' || n || '-' || %s, now() - make_interval(mins => n), 'ok'"
            " FROM generate_series(1, 500) n",
            (terminal, terminal),
        )


def _store_alerts(
    conn: psycopg.Connection[Any], ids: dict[str, int], stored: Stored, user_ids: list[int]
) -> None:
    """500 alerts on one terminal, incidents, and the extremes of every column."""
    incidents = [
        _one(
            conn,
            "INSERT INTO incident (id, status, severity, summary, alert_count, opened_at,"
            " last_alert_at, closed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (number, hostile(16), hostile(16), hostile(2000), count, at, at, at),
        )
        # Ids from the top, so the sequence stays free for rows the console adds.
        for number, count, at in zip(
            range(INT_MAX, 0, -1), (0, -1, INT_MIN, INT_MAX, 1), TIMES, strict=False
        )
    ]
    many = ids["TC-MANY"]
    statuses = cycle(("open", "acknowledged", "resolved", hostile(16)))
    severities = cycle(("critical", "major", "warning", "info", hostile(16)))
    for number in range(500):
        at = TIMES[number % len(TIMES)]
        alert_id = _one(
            conn,
            "INSERT INTO alert (terminal_id, customer_id, scope, host_name, incident_id, kind,"
            " severity, status, message, count, first_seen_at, last_seen_at, acknowledged_by,"
            " assignee_id, acknowledged_at, raised_at, resolved_at, resolution_note)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (
                many,
                None,
                f"terminal:{many}",
                hostile(200),
                incidents[number % 5],
                hostile(32, f"{number:03d}"),
                next(severities),
                next(statuses),
                hostile(2000),
                (INT_MAX, INT_MIN, 0)[number % 3],
                at,
                at,
                user_ids[number % len(user_ids)],
                user_ids[-1 - number % len(user_ids)],
                at,
                at,
                at,
                hostile(2000),
            ),
        )
        if number < 5:
            stored.alert_ids.append(alert_id)
    # A store-PC alert (no terminal, no customer) and one with every nullable column NULL.
    for alert_id, host in ((INT_MAX, hostile(200)), (INT_MAX - 1, None)):
        stored.alert_ids.append(
            _one(
                conn,
                "INSERT INTO alert (id, kind, severity, status, message, count, scope, host_name)"
                " VALUES (%s, %s, '', 'open', '', 1, %s, %s) RETURNING id",
                (alert_id, hostile(32, f"{alert_id}"), hostile(300, f"{alert_id}"), host),
            )
        )


def _store_commands(
    conn: psycopg.Connection[Any], ids: dict[str, int], stored: Stored, user_id: int
) -> None:
    """Commands in every state with odd arguments and results, and bulks."""
    bulks = []
    for number, (rate, total, at) in enumerate(
        zip(
            (math.nan, math.inf, 0.0, -1.0, 5.0),
            (0, -1, INT_MAX, INT_MIN, 500),
            TIMES,
            strict=False,
        )
    ):
        bulk_id = INT_MAX - number  # from the top: the console's new bulks take 1, 2...
        bulks.append(
            _one(
                conn,
                "INSERT INTO command_bulk (id, name, args, selection, summary, rate_per_s, total,"
                " requested_by, created_at, cancelled_at, cancelled_by) VALUES (%s, %s,"
                " %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    bulk_id,
                    "ping" if number % 2 else hostile(64),
                    list(ODD_JSON.values())[number + 2],
                    list(ODD_JSON.values())[number + 3],
                    hostile(500),
                    rate,
                    total,
                    hostile(64),
                    at,
                    at,
                    hostile(64),
                ),
            )
        )
    stored.bulk_ids = bulks
    names = [*CATALOG, hostile(64)]
    results = {**ODD_JSON, **DIAGNOSTICS, "huge": HUGE_JSON}
    rows = []
    number = 0
    for serial in ("TC-ODD", hostile(64, "T1 ", slash=False)):
        for result_name, result in results.items():
            if result_name == "huge" and serial != "TC-ODD":
                continue  # one copy of the 5 MB result is enough
            for name in names:
                states = list(CommandState) if result_name == "full" else [CommandState.SUCCEEDED]
                for state in states:
                    number += 1
                    rows.append(
                        (
                            f"{number:03d}" + hostile(61, slash=False),
                            ids[serial],
                            name,
                            state.value,
                            result,
                            number,
                        )
                    )
    for command_id, terminal, name, state, result, n in rows:
        at = TIMES[n % len(TIMES)]
        conn.execute(
            "INSERT INTO command (id, terminal_id, name, args, status, created_by, created_at,"
            " sent_at, expires_at, finished_at, result, error, requested_by, requester_kind,"
            " token_name, origin, request_id, attempts, max_attempts, timeout_s, due_at,"
            " last_sent_at, cancelled_by, bulk_id) VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s,"
            " %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                command_id,
                terminal,
                name,
                list(ODD_JSON.values())[n % len(ODD_JSON)],
                state,
                user_id if n % 2 else None,
                at,
                TIMES[(n + 1) % 7],
                TIMES[(n + 2) % 7],
                TIMES[(n + 3) % 7],
                result,
                hostile(2000) if n % 3 else None,
                hostile(64),
                ("token", "mqtt", "user", hostile(16))[n % 4],
                hostile(100),
                hostile(64),
                hostile(64, f"{n} "),
                (INT_MAX, INT_MIN, 0)[n % 3],
                (INT_MIN, INT_MAX, 0)[n % 3],
                FLOATS[n % len(FLOATS)],
                at,
                TIMES[(n + 4) % 7],
                hostile(64),
                bulks[n % len(bulks)] if n % 4 else None,
            ),
        )
        stored.command_ids.append(command_id)
        if terminal == ids["TC-ODD"] and name == "ping":
            stored.command_with.setdefault(
                next(k for k, v in results.items() if v == result), command_id
            )
    # An id that cannot be one URL segment, and 500 failed commands in one bulk.
    conn.execute(
        "INSERT INTO command (id, terminal_id, name, status, error) VALUES (%s, %s, 'ping',"
        " 'failed', %s)",
        (hostile(64, "X/"), ids["TC-MANY"], hostile(2000)),
    )
    conn.execute(
        "INSERT INTO command (id, terminal_id, name, status, error, finished_at, bulk_id)"
        " SELECT 'bulk-' || n, %s, 'ping', 'failed', %s, now(), %s"
        " FROM generate_series(1, 500) n",
        (ids["TC-MANY"], hostile(2000), bulks[-1]),
    )


def _store_people(conn: psycopg.Connection[Any], stored: Stored) -> list[int]:
    """200 users with hostile names and roles, their tokens, 500 audit events."""
    stored.username = hostile(64, "u001 ").lower()  # an active operator
    user_ids = [
        _one(
            conn,
            "INSERT INTO user_account (username, password_hash, role, active, created_at,"
            " last_login_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (
                hostile(64, f"u{n:03d} ").lower(),
                hostile(256),
                ("admin", "operator", "support", "viewer", hostile(16))[n % 5],
                n % 3 > 0,
                TIMES[n % 7],
                TIMES[(n + 3) % 7] if n % 4 else None,
            ),
        )
        for n in range(200)
    ]
    for n, user_id in enumerate(user_ids[:20]):
        conn.execute(
            "INSERT INTO api_token (user_id, name, token_hash, created_at, last_used_at,"
            " revoked_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                user_id,
                hostile(100),
                hostile(64, f"{n:02d}"),
                TIMES[n % 7],
                TIMES[(n + 1) % 7],
                TIMES[(n + 2) % 7] if n % 2 else None,
            ),
        )
    details = cycle([*ODD_JSON.values(), HUGE_JSON])
    for n in range(500):
        conn.execute(
            "INSERT INTO audit_event (id, at, actor, action, target, detail, remote_addr)"
            " VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)",
            (
                BIGINT_MAX - n,
                TIMES[n % 7],
                hostile(64),
                hostile(64, "a." if n % 2 else ""),
                hostile(200),
                next(details) if n < 20 else None,
                hostile(64) if n % 2 else None,
            ),
        )
    return user_ids


def _store_ingest_side(conn: psycopg.Connection[Any], ids: dict[str, int], stored: Stored) -> None:
    """Dead letters, credentials, firmware, update tasks, notifications, policies."""
    stored.reason = hostile(64, "R ")
    payloads = (b"\xff\xfe\x00<script>alert(1)</script>\xc3", b"", XSS.encode() * 30_000)
    for n in range(500):
        conn.execute(
            "INSERT INTO dead_letter (received_at, topic, payload, reason, detail)"
            " VALUES (%s, %s, %s, %s, %s)",
            (
                TIMES[n % 7],
                hostile(1024),
                payloads[n % 3] if n < 30 else b"{}",
                stored.reason if n % 2 else "",
                hostile(2000),
            ),
        )
    for serial, terminal in ids.items():
        conn.execute(
            "INSERT INTO credential (username, kind, terminal_id, salt, secret_hash, created_at,"
            " revoked_at) VALUES (%s, 'terminal', %s, %s, %s, %s, %s)",
            (
                serial or hostile(64, "cred"),
                terminal,
                hostile(64),
                hostile(128),
                EARLIEST,
                LATEST if serial == "TC-ODD" else None,
            ),
        )
    # Released, so that the agents' download routes read it with every column hostile.
    firmware = _one(
        conn,
        "INSERT INTO firmware (version, filename, size, sha256, notes, created_at, models,"
        " signature, key_id, state, created_by, released_at, released_by, deprecated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, 'released', %s, %s, %s, %s)"
        " RETURNING id",
        (
            stored.firmware, hostile(255), BIGINT_MAX, hostile(64), hostile(4000), LATEST,
            ODD_JSON["deep-unreadable"], hostile(200), hostile(32), hostile(200), EARLIEST,
            hostile(200), "infinity",
        ),
    )  # fmt: skip
    # A second, with a list of models of every JSON kind.
    conn.execute(
        "INSERT INTO firmware (version, filename, size, sha256, notes, models, state)"
        " VALUES (%s, '', %s, %s, '', %s::jsonb, 'deprecated')",
        ("0", -BIGINT_MAX, "0" * 64, '[1, null, "TC-200", {"a": []}, 1e308]'),
    )
    # A terminal the agents' routes accept (HTTP Basic): its secret is known.
    agent = _one(conn, "SELECT id FROM terminal WHERE status <> 'decommissioned' LIMIT 1")
    secret = hash_secret(AGENT_SECRET)
    conn.execute(
        "INSERT INTO credential (username, kind, terminal_id, salt, secret_hash)"
        " VALUES (%s, 'terminal', %s, %s, %s)",
        (AGENT_USER, agent, secret.salt, secret.secret_hash),
    )
    rollout = _one(
        conn,
        "INSERT INTO rollout (name, firmware_id, state, target, policy, wave_spec, seed,"
        " excluded, halt_reason, note, created_by, created_at, updated_at, finished_at)"
        " VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)"
        " RETURNING id",
        (
            hostile(200), firmware, hostile(16), ODD_JSON["deep-unreadable"],
            '[1, null, "x", {"a": []}, 1e308]', hostile(200), -BIGINT_MAX,
            '{"x": -1e308, "": null}', hostile(2000), hostile(2000), hostile(200),
            EARLIEST, "infinity", "-infinity",
        ),
    )  # fmt: skip
    conn.execute(
        "INSERT INTO rollout_wave (rollout_id, number, size, started_at, approved_at,"
        " approved_by) VALUES (%s, %s, %s, %s, %s, %s), (%s, %s, %s, NULL, NULL, NULL)",
        (rollout, INT_MIN, INT_MAX, EARLIEST, "infinity", hostile(200), rollout, 0, -1),
    )
    conn.execute("UPDATE store SET maintenance_window = %s", (hostile(100),))
    conn.execute("UPDATE terminal SET tags = ARRAY[%s, '', %s]", (hostile(64), hostile(64)))
    for number, terminal in zip(FLOATS, ids.values(), strict=False):
        conn.execute(
            "INSERT INTO update_task (rollout_id, firmware_id, terminal_id, wave, state,"
            " attempts, retry_at, command_id, percent, from_version, version_after, failure,"
            " reason, created_at, updated_at, started_at, finished_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                rollout, firmware, terminal, INT_MIN, hostile(32), INT_MAX, "-infinity",
                hostile(64), number, hostile(64), hostile(64), hostile(64), hostile(2000),
                EARLIEST, "infinity", LATEST, EARLIEST,
            ),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO heartbeat_policy (terminal_id, interval_s, missed) VALUES (%s, %s, %s)",
            (terminal, math.inf if number != number else 5e-324, INT_MAX),
        )
    conn.execute(
        "INSERT INTO notification_outbox (route, channel, target, payload, status, attempts,"
        " next_attempt_at, last_error, created_at, sent_at) VALUES (%s, %s, %s, %s::jsonb, %s,"
        " %s, %s, %s, %s, %s)",
        (
            hostile(64),
            hostile(16),
            hostile(1000),
            ODD_JSON["deep-unreadable"],
            hostile(16),
            INT_MIN,
            "-infinity",
            hostile(2000),
            EARLIEST,
            LATEST,
        ),
    )


def store_worst_values(database_url: str) -> Stored:
    stored = Stored()
    with psycopg.connect(libpq_url(database_url)) as conn:
        ids = _store_fleet(conn, stored)
        _store_history(conn, ids)
        user_ids = _store_people(conn, stored)
        _store_alerts(conn, ids, stored, user_ids)
        _store_commands(conn, ids, stored, user_ids[0])
        _store_ingest_side(conn, ids, stored)
        _store_fleet_samples(conn)
        _note_ids(conn, stored)
    return stored


def _store_fleet_samples(conn: psycopg.Connection[Any]) -> None:
    """A month of samples for every customer, with the worst counts the columns hold."""
    conn.execute(
        "INSERT INTO fleet_sample (bucket, customer_id, in_service, online, offline, error,"
        " unknown, maintenance) SELECT b, c.id, (ARRAY[0, %s, 1])[1 + n %% 3],"
        " (ARRAY[%s, 0, 2])[1 + n %% 3], %s, 0, %s, %s"
        " FROM customer c, generate_series(now() - interval '31 days', now(), interval '1 hour')"
        " WITH ORDINALITY AS g(b, n)",
        (INT_MAX, INT_MAX, INT_MAX, INT_MIN, INT_MAX),
    )


def _note_ids(conn: psycopg.Connection[Any], stored: Stored) -> None:
    """The URL arguments of the user, customer and store pages: a few of each kind."""
    rows = conn.execute(
        "SELECT u.username, t.id FROM api_token t JOIN user_account u ON u.id = t.user_id"
        " ORDER BY t.id LIMIT 2"
    ).fetchall()
    stored.usernames = sorted({name for name, _ in rows} | {stored.username})
    stored.token_ids = [token_id for _, token_id in rows]
    stored.customer_ids = [row[0] for row in conn.execute("SELECT id FROM customer LIMIT 3")]
    stored.store_ids = [row[0] for row in conn.execute("SELECT id FROM store LIMIT 3")]
    stored.rollout_ids = [row[0] for row in conn.execute("SELECT id FROM rollout LIMIT 3")]


# -- opening every route -------------------------------------------------------------------

STATIC = Path(__file__).resolve().parents[2] / "console" / "static"


def argument_values(stored: Stored) -> dict[str, list[Any]]:
    """What each kind of URL argument is filled with: every stored id and one unknown."""
    return {
        "serial": [*stored.serials, "NO-SUCH-TERMINAL"],
        "command_id": [*stored.command_ids, "no-such-command"],
        "bulk_id": [*stored.bulk_ids, 2_000_000_000],
        "alert_id": [*stored.alert_ids, 1_999_999_999],
        "filename": sorted(path.name for path in STATIC.iterdir()),
        "username": [*stored.usernames, "no-such-user"],
        "token_id": [*stored.token_ids, 2_000_000_000],
        "customer_id": [*stored.customer_ids, 2_000_000_000],
        "store_id": [*stored.store_ids, 2_000_000_000],
        "rollout_id": [*stored.rollout_ids, 2_000_000_000],
        "version": [stored.firmware, "0", "no-such-version"],
        "month": [
            ReportMonth.last_full(datetime.now(UTC)).key,
            ReportMonth.of(datetime.now(UTC)).key,
            "2026-13",
            "0000-01",
            "9999-12",
            hostile(40, slash=False),
        ],
    }


def query_strings(stored: Stored) -> list[str]:
    """Filters of the list pages and the API, with stored values and absurd ones."""
    return [
        "",
        "?" + urlencode({"status": "all"}),
        "?" + urlencode({"status": hostile(32)}),
        "?" + urlencode({"customer": stored.customer, "q": hostile(64), "page": "2"}),
        "?" + urlencode({"customer": "", "status": "error", "page": "20"}),
        "?" + urlencode({"reason": stored.reason}),
        "?" + urlencode({"page": "9" * 30}),
        "?" + urlencode({"limit": "1000", "offset": str(INT_MAX)}),
        "?" + urlencode({"store": stored.store, "firmware": stored.firmware, "name": "ping"}),
    ]


def post_bodies(stored: Stored) -> dict[str, list[dict[str, Any]]]:
    """Form fields (or API JSON bodies) per endpoint; an endpoint not named gets {}."""
    selection = {"customer": stored.customer, "store": stored.store, "firmware": stored.firmware}
    return {
        "auth.login": [{"username": stored.username, "password": hostile(100)}],
        "terminal_actions.decommission": [{"reason": hostile(200)}],
        "terminal_actions.swap": [{"new_serial": hostile(64)}],
        "commands.send": [
            {"name": "set_config", "arg_receipt_header": hostile(200)},
            {"name": "reboot", "confirmed": "yes"},
            {"name": hostile(64)},
        ],
        "commands.bulk_review": [
            {"name": "ping", "rate": "nan", **selection},
            {"name": "ping", "rate": "5", **selection},
        ],
        "commands.bulk_send": [
            {"name": "ping", "rate": "1e308", "expected": "-1", **selection},
            {"name": "ping", "rate": "5", "expected": "-1", **selection},
            {"name": "ping", "rate": "5", "expected": "1", "customer": "", "q": "TC-MANY"},
        ],
        "alerts.resolve_view": [{"note": hostile(2000)}],
        "alerts.bulk": [
            {"action": "acknowledge", "alert": [str(i) for i in stored.alert_ids]},
            {
                "action": "assign",
                "assignee": stored.username,
                "alert": [str(i) for i in stored.alert_ids],
            },
            {
                "action": "resolve",
                "note": hostile(2000),
                "alert": [str(i) for i in stored.alert_ids],
            },
            {"action": hostile(16), "alert": hostile(40)},
        ],
        "user_admin.create": [
            {"username": hostile(64), "role": hostile(16)},
            {"username": "worst-new", "role": "viewer"},
        ],
        "user_admin.change_role": [{"role": hostile(16)}, {"role": "viewer"}],
        "user_admin.issue_token": [{"name": hostile(100)}],
        "auth.change_password": [
            {"current": hostile(100), "new": hostile(1001), "confirm": hostile(1001)}
        ],
        "alerts.assign_view": [{"assignee": stored.username}],
        "api_commands.send": [
            {"name": "set_config", "args": {"receipt_header": hostile(40)}},
            {"name": "ping"},
        ],
        "rollouts.preview": [
            {"version": stored.firmware, "name": hostile(200), "waves": hostile(200)},
            {"version": stored.firmware, "name": "worst", "waves": "1,100"},
        ],
        "rollouts.resume": [
            {"error_threshold_pct": "nan", "success_threshold_pct": "1e308"},
            {"confirmed": "yes"},
        ],
        "rollouts.cancel": [{}, {"confirmed": "yes"}],
        "rollouts.approve": [{"wave": str(INT_MIN)}, {"wave": "1", "confirmed": "yes"}],
        "firmware.release": [{}, {"confirmed": "yes"}],
        "firmware.deprecate": [{}, {"confirmed": "yes"}],
        "api_rollouts.create": [
            {
                "name": hostile(200),
                "version": stored.firmware,
                "waves": "1,100",
                "target": {"customers": [INT_MAX]},
                "policy": {"error_threshold_pct": 1e308},
                "dry_run": True,
            },
        ],
        "api_rollouts.resume": [{"policy": {"max_failures": -1}}],
        "api_rollouts.approve": [{"wave": INT_MAX}],
        "api_commands.send_bulk": [
            {"name": "ping", "selection": {**selection, "search": hostile(64)}, "dry_run": True}
        ],
    }


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    endpoint: str
    body: dict[str, Any]


def calls(app: Flask, stored: Stored, method: str) -> Iterator[Call]:
    """Every rule of the app that answers ``method``, with every stored id filled in."""
    adapter = app.url_map.bind("localhost")
    values = argument_values(stored)
    bodies = post_bodies(stored)
    rules: list[Rule] = sorted(app.url_map.iter_rules(), key=lambda r: r.endpoint == "auth.logout")
    for rule in rules:
        if method not in (rule.methods or ()):
            continue
        missing = rule.arguments - values.keys()
        assert not missing, f"{rule.rule}: add stored values for {sorted(missing)} above"
        names = sorted(rule.arguments)
        for combination in product(*(values[name] for name in names)):
            try:
                path = adapter.build(
                    rule.endpoint, dict(zip(names, combination, strict=True)), method=method
                )
            except BuildError:
                continue  # a value the route cannot take, e.g. an empty serial
            if method == "GET":
                queries = query_strings(stored) if not names else [""]
                if rule.endpoint.startswith("reports."):  # a customer's report, and the fleet's
                    queries = ["", "?" + urlencode({"customer": stored.customer})]
                for query in queries:
                    yield Call(method, path + query, rule.endpoint, {})
            else:
                for body in bodies.get(rule.endpoint, [{}]):
                    yield Call(method, path, rule.endpoint, body)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def problems_of(call: Call, response: TestResponse) -> list[str]:
    where = f"{call.method} {call.url[:120]!r}"
    found = []
    if response.mimetype == "application/pdf":
        data = response.get_data()
        if response.status_code == 200 and not data.startswith(b"%PDF-"):
            found.append(f"{where}: not a PDF")
        return found + ([f"{where}: {response.status_code}"] if response.status_code >= 500 else [])
    body = response.get_data(as_text=True)
    if response.status_code >= 500:
        found.append(f"{where}: {response.status_code}")
    if "Traceback" in body:
        found.append(f"{where}: a traceback in the answer")
    if response.mimetype == "text/html":
        found += [f"{where}: unescaped {marker!r}" for marker in RAW_MARKERS if marker in body]
    api = call.url.startswith(("/api/", "/agent/"))
    if api and not 300 <= response.status_code < 400 and response.mimetype != "application/json":
        found.append(f"{where}: API answered {response.mimetype}")
    if response.mimetype == "application/json":
        try:
            json.loads(body, parse_constant=_refuse_constant)
        except ValueError as exc:
            found.append(f"{where}: invalid JSON ({exc})")
    return found


@dataclass
class Visit:
    """What opening the routes found: failures, and the answers slower than a second."""

    problems: list[str] = field(default_factory=list)
    slow: list[tuple[float, str]] = field(default_factory=list)
    opened: set[str] = field(default_factory=set)


def _csrf(client: FlaskClient) -> str:
    """The session's CSRF token, without rendering a page each time."""
    with client.session_transaction() as session:
        token = session.get("csrf_token")
    return token if isinstance(token, str) else csrf_of(client)


def open_all(client: FlaskClient, token: str | None, all_calls: Iterator[Call]) -> Visit:
    visit = Visit()
    for call in all_calls:
        api = call.url.startswith("/api/")
        headers = {"Authorization": f"Bearer {token}"} if api and token else {}
        if call.url.startswith("/agent/") and token:  # as a terminal's agent
            raw = base64.b64encode(f"{AGENT_USER}:{AGENT_SECRET}".encode()).decode()
            headers = {"Authorization": f"Basic {raw}"}
        started = time.perf_counter()
        try:
            if call.method == "GET":
                response = client.get(call.url, headers=headers)
            elif api:
                response = client.post(call.url, json=call.body, headers=headers)
            else:
                form = {**call.body, "csrf_token": _csrf(client)}
                response = client.post(call.url, data=form, headers=headers)
        except Exception as exc:  # noqa: BLE001 (each failure is collected, then all reported)
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            visit.problems.append(
                f"{call.method} {call.url[:120]!r}: {type(exc).__name__}: {str(exc)[:300]}"
                f" at {frame.filename}:{frame.lineno}"
            )
            continue
        elapsed = time.perf_counter() - started
        if elapsed > 1.0:
            visit.slow.append((elapsed, f"{call.method} {call.url[:100]!r}"))
        visit.problems += problems_of(call, response)
        visit.opened.add(call.endpoint)
    return visit


ROLES = ("admin", "operator", "support", "viewer", "unknown-role", "anonymous")


@pytest.fixture
def stored(database_url: str) -> Stored:
    return store_worst_values(database_url)


@pytest.fixture
def visitor(
    console_app: Flask, client: FlaskClient, make_user: Callable[..., str], request: Any
) -> tuple[FlaskClient, str | None]:
    """The test client signed in with the role of the test's parameter, and an API token."""
    role: str = request.param
    if role == "anonymous":
        return client, None
    name = make_user(f"{role}-visitor", "viewer" if role == "unknown-role" else role)
    with Session(engine_of(console_app)) as session:
        account = users.get_user_by_name(session, name)
        assert account is not None
        token = users.create_api_token(session, account, hostile(100))
        if role == "unknown-role":  # a role no release ever wrote
            account.role = hostile(16)
            session.add(account)
            session.commit()
    sign_in(client, name)
    return client, token


def _report(app: Flask, visit: Visit, method: str) -> None:
    for elapsed, what in sorted(visit.slow, reverse=True):
        print(f"slow: {elapsed:.2f} s {what}")
    assert not visit.problems, f"{len(visit.problems)} problems:\n" + "\n".join(visit.problems)
    every = {r.endpoint for r in app.url_map.iter_rules() if method in (r.methods or ())}
    assert visit.opened == every, f"never opened: {sorted(every - visit.opened)}"


@pytest.mark.parametrize("visitor", ROLES, indirect=True)
def test_every_page_and_api_route_reads_the_worst_stored_values(
    console_app: Flask, stored: Stored, visitor: tuple[FlaskClient, str | None]
) -> None:
    client, token = visitor
    _report(console_app, open_all(client, token, calls(console_app, stored, "GET")), "GET")


@pytest.mark.parametrize("visitor", ROLES, indirect=True)
def test_every_form_and_api_post_survives_the_worst_stored_values(
    console_app: Flask, stored: Stored, visitor: tuple[FlaskClient, str | None]
) -> None:
    client, token = visitor
    _report(console_app, open_all(client, token, calls(console_app, stored, "POST")), "POST")


# -- what the worst values read as ---------------------------------------------------------


def _api(client: FlaskClient, token: str | None, path: str) -> Any:
    response = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return json.loads(response.get_data(as_text=True), parse_constant=_refuse_constant)


@pytest.mark.parametrize("visitor", ["admin"], indirect=True)
def test_what_python_cannot_hold_reads_at_its_nearest_end(
    stored: Stored, visitor: tuple[FlaskClient, str | None]
) -> None:
    client, token = visitor
    # -infinity and -inf: the first instant of year 1, and no reading.
    odd = _api(client, token, "/api/v1/terminals/TC-ODD")
    assert odd["last_heartbeat_at"] == "0001-01-01T00:00:00+00:00"
    assert (odd["cpu"], odd["memory"], odd["disk"]) == (None, None, None)
    # infinity and +inf: the last instant of year 9999, and no reading.
    serial = hostile(64, "T1 ", slash=False)
    far = _api(client, token, "/api/v1/terminals/" + quote(serial, safe=""))
    assert far["last_heartbeat_at"] == "9999-12-31T23:59:59.999999+00:00"
    assert far["cpu"] is None
    page = client.get("/terminals/TC-ODD").get_data(as_text=True)
    assert "0001-01-01 00:00:00 UTC" in page

    def result(kind: str) -> Any:
        return _api(client, token, "/api/v1/commands/" + quote(stored.command_with[kind]))["result"]

    assert result("long-integer") == "7" * 5000  # kept as its digits
    assert result("deep-unreadable") == UNREADABLE_JSON
    cut = result("deep-readable")
    for _ in range(MAX_JSON_DEPTH - 1):
        cut = cut["a"]
    assert cut == {"a": CUT_JSON}
    assert result("wide-number") == 10**1000


@pytest.mark.parametrize("visitor", ["admin"], indirect=True)
def test_a_command_state_no_release_writes_is_shown_not_a_500(
    console_app: Flask, database_url: str, visitor: tuple[FlaskClient, str | None]
) -> None:
    client, token = visitor
    with psycopg.connect(libpq_url(database_url)) as conn:
        customer = _one(conn, "INSERT INTO customer (name) VALUES ('Acme') RETURNING id")
        terminal = _one(
            conn,
            "INSERT INTO terminal (serial, customer_id, model, status) VALUES"
            " ('TC-1', %s, 'TC-200', 'online') RETURNING id",
            (customer,),
        )
        bulk = _one(
            conn,
            "INSERT INTO command_bulk (name, rate_per_s, total, requested_by) VALUES"
            " ('ping', 5, 1, 'ops') RETURNING id",
        )
        conn.execute(
            "INSERT INTO command (id, terminal_id, name, status, bulk_id) VALUES"
            " ('odd-state', %s, 'ping', %s, %s)",
            (terminal, hostile(16), bulk),
        )
    paths = [
        "/terminals/TC-1",
        "/terminals/TC-1/activity",
        "/commands/odd-state",
        f"/commands/bulk/{bulk}",
        f"/commands/bulk/{bulk}/progress",
        "/api/v1/terminals/TC-1/commands",
        "/api/v1/commands/odd-state",
        f"/api/v1/commands/bulk/{bulk}",
    ]
    visit = open_all(client, token, (Call("GET", path, "", {}) for path in paths))
    assert not visit.problems, "\n".join(visit.problems)
