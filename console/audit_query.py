"""The audit screen's filters and page, read from the query string (pure: no I/O).

Everything lives in the URL, so a filtered view can be bookmarked, shared and exported.
A bad date is an error shown beside its field; any other odd value is cut or dropped,
never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.datastructures import MultiDict

from shared.audit_trail import ACTION_MAX, ACTOR_MAX, REMOTE_ADDR_MAX, TARGET_MAX

# PostgreSQL's bigint: an id past it cannot exist, and binding one is an error.
BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)
# Long enough for every accepted form; more is a typo or an attack, not a date.
DATE_TEXT_MAX = 32
DATE_FORMS = "YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
# An action ending in "." selects that family: "user." is every "user.…" action, and
# "login." is "login" and every "login.…" one. One ending in "*" is a plain prefix.
FAMILY_MARK = "."
PREFIX_MARK = "*"

# ASCII digits only: \d also matches other scripts' digits, which strptime reads.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MINUTE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}")


def _text(args: MultiDict[str, str], name: str, width: int) -> str | None:
    # PostgreSQL text holds no NUL character, and binding one is an error. The app
    # refuses a NUL in any query string; dropped here too, so the parser stands alone.
    value = args.get(name, "").replace("\x00", "").strip()[:width]
    return value or None


def parse_moment(text: str, *, end: bool) -> datetime | None:
    """The instant a date field names, in UTC; ValueError with a sentence if it names none.

    ``end`` gives the end of the day or minute written (so "until 2024-05-01" includes
    that whole day), or None when that end lies past what Python holds (no bound)."""
    if _DATE.fullmatch(text):
        form, step = "%Y-%m-%d", timedelta(days=1)
    elif _MINUTE.fullmatch(text):
        form, step = "%Y-%m-%dT%H:%M", timedelta(minutes=1)
    else:
        raise ValueError(f"Write the time as {DATE_FORMS}.")
    try:
        start = datetime.strptime(text, form).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text} is not a date and time that exists.") from None
    if not end:
        return start
    try:
        return start + step
    except OverflowError:
        return None


def _before_id(args: MultiDict[str, str]) -> int | None:
    try:
        value = int(args.get("before_id", "").strip())
    except ValueError:  # not a number (or over Python's 4,300-digit limit)
        return None
    if value > BIGINT_MAX:
        return None  # older than an id past every id: every row
    return max(value, BIGINT_MIN)


@dataclass(frozen=True)
class AuditQuery:
    """The audit list's filters and page; ``errors`` maps a field to what is wrong with it.

    ``since`` is the first instant included, ``until_end`` the first one excluded (the
    end of the day or minute ``until`` names). The texts are kept as typed, to show them
    again and to build links."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since_text: str | None = None
    until_text: str | None = None
    remote_addr: str | None = None
    before_id: int | None = None
    since: datetime | None = None
    until_end: datetime | None = None
    errors: Mapping[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def parse(cls, args: MultiDict[str, str]) -> AuditQuery:
        errors: dict[str, str] = {}
        since_text = _text(args, "since", DATE_TEXT_MAX)
        until_text = _text(args, "until", DATE_TEXT_MAX)
        since = until_end = None
        if since_text:
            try:
                since = parse_moment(since_text, end=False)
            except ValueError as exc:
                errors["since"] = str(exc)
        if until_text:
            try:
                until_end = parse_moment(until_text, end=True)
            except ValueError as exc:
                errors["until"] = str(exc)
        if since is not None and until_end is not None and until_end <= since:
            errors["until"] = "Until is before since: nothing could match."
        return cls(
            actor=_text(args, "actor", ACTOR_MAX),
            action=_text(args, "action", ACTION_MAX),
            target=_text(args, "target", TARGET_MAX),
            since_text=since_text,
            until_text=until_text,
            remote_addr=_text(args, "remote_addr", REMOTE_ADDR_MAX),
            before_id=_before_id(args),
            since=since,
            until_end=until_end,
            errors=errors,
        )

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def filtered(self) -> bool:
        """Whether any filter is set (the page alone does not count)."""
        return bool(self.args(before_id=None))

    def action_match(self) -> tuple[str, str] | None:
        """How the action filter matches: ("exact", action), ("family", "user") or
        ("prefix", "log"); None when there is no action filter."""
        if not self.action:
            return None
        if self.action.endswith(PREFIX_MARK):
            stem = self.action.rstrip(PREFIX_MARK)
            return ("prefix", stem) if stem else None
        if self.action.endswith(FAMILY_MARK):
            stem = self.action.rstrip(FAMILY_MARK)
            return ("family", stem) if stem else None
        return ("exact", self.action)

    def args(self, **changes: Any) -> dict[str, Any]:
        """Query-string arguments for a link to this list with ``changes`` applied."""
        current: dict[str, Any] = {
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "since": self.since_text,
            "until": self.until_text,
            "remote_addr": self.remote_addr,
            "before_id": self.before_id,
        }
        current.update(changes)
        return {key: value for key, value in current.items() if value is not None and value != ""}


def action_choices(actions: Iterable[str]) -> list[tuple[str, str]]:
    """(value, label) pairs for the action select box: each family ("user." for
    "user.created" and the rest), then every action, in order."""
    actions = sorted(set(actions))
    families = sorted({a.split(FAMILY_MARK, 1)[0] for a in actions if FAMILY_MARK in a} - {""})
    return [(f"{family}{FAMILY_MARK}", f"{family}.… (all)") for family in families] + [
        (action, action) for action in actions
    ]
