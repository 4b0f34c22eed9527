"""The alerts screen's filters and page, read from the query string (pure: no I/O).

Everything lives in the URL, so a filtered view can be bookmarked and shared, and the
live partial asks for exactly what the page shows. An odd value is cut or dropped,
never an error: a stale link still opens a list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MultiDict

# "active" is what needs a person: open and acknowledged alerts.
STATUSES = ("active", "open", "acknowledged", "resolved", "all")
DEFAULT_STATUS = "active"
# ingest.alerts.config.Severity, worst first (the console does not import ingest).
SEVERITIES = ("critical", "major", "warning", "info")
# Assignee keywords: the signed-in user, and alerts with no assignee.
ASSIGNEE_ME = "me"
ASSIGNEE_NONE = "none"
# The columns' widths (shared/models.py): a longer value cannot match anything.
KIND_MAX = 32
CUSTOMER_MAX = 200
USERNAME_MAX = 64
SERIAL_MAX = 64
# alert.id and incident.id are PostgreSQL integers.
ID_MAX = 2**31 - 1
# At most this many alerts in one bulk action.
BULK_MAX = 500


def _text(args: MultiDict[str, str], name: str, width: int) -> str | None:
    # PostgreSQL text holds no NUL; the app refuses one in a query string already, and
    # it is dropped here too so that the parser stands alone.
    value = args.get(name, "").replace("\x00", "").strip()[:width]
    return value or None


def parse_id(text: str) -> int | None:
    """``text`` as an alert or incident id, or None when it cannot be one."""
    text = text.strip()
    # ASCII digits only: int() also reads other scripts' digits, "1_000" and " +1".
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if 1 <= value <= ID_MAX else None


def parse_ids(values: Iterable[str]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The alert ids of a bulk form in the order given, each once, and the values that
    are not ids (cut to 40 characters, to be reported)."""
    ids: dict[int, None] = {}
    bad: dict[str, None] = {}
    for value in values:
        parsed = parse_id(value)
        if parsed is None:
            bad[value[:40]] = None
        else:
            ids[parsed] = None
    return tuple(ids), tuple(bad)


@dataclass(frozen=True)
class AlertQuery:
    """The list's filters and page; unknown values are dropped.

    ``before`` is the keyset cursor: the id of the last alert (or incident's newest
    alert) of the previous page; the page holds what was raised before it."""

    status: str = DEFAULT_STATUS
    severity: str | None = None
    kind: str | None = None
    customer: str | None = None
    assignee: str | None = None  # a username, ASSIGNEE_ME or ASSIGNEE_NONE
    incident: int | None = None
    serial: str | None = None  # a terminal serial prefix
    before: int | None = None

    @classmethod
    def parse(cls, args: MultiDict[str, str]) -> AlertQuery:
        status = args.get("status", "").strip().lower()
        severity = args.get("severity", "").strip().lower()
        # Usernames are stored in lower case (console.users.normalize_username).
        assignee = _text(args, "assignee", USERNAME_MAX)
        return cls(
            status=status if status in STATUSES else DEFAULT_STATUS,
            severity=severity if severity in SEVERITIES else None,
            kind=_text(args, "kind", KIND_MAX),
            customer=_text(args, "customer", CUSTOMER_MAX),
            assignee=assignee.lower() if assignee else None,
            incident=parse_id(args.get("incident", "")),
            serial=_text(args, "q", SERIAL_MAX),
            before=parse_id(args.get("before", "")),
        )

    @property
    def filtered(self) -> bool:
        """Whether anything but the default list is asked for (the page aside)."""
        return bool(self.args(before=None))

    @property
    def grouped(self) -> bool:
        """Whether an incident's alerts show as one row: not when one incident is asked."""
        return self.incident is None

    def args(self, **changes: Any) -> dict[str, Any]:
        """Query-string arguments for a link to this list with ``changes`` applied."""
        current: dict[str, Any] = {
            "status": None if self.status == DEFAULT_STATUS else self.status,
            "severity": self.severity,
            "kind": self.kind,
            "customer": self.customer,
            "assignee": self.assignee,
            "incident": self.incident,
            "q": self.serial,
            "before": self.before,
        }
        current.update(changes)
        if current.get("status") == DEFAULT_STATUS:
            current["status"] = None
        return {key: value for key, value in current.items() if value is not None and value != ""}
