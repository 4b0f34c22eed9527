"""Reading what PostgreSQL holds but Python cannot: timestamps outside the years 1 to
9999, and JSON nested too deep or with integers too long for ``int``.

The columns allow them (a ``timestamptz`` runs from 4713 BC to 294276 AD plus
+-infinity; ``jsonb`` nests thousands of levels and keeps 100,000-digit numbers), and
psycopg's own loaders raise on them, which turned one bad row into a 500 on every page
that lists it. The console registers these loaders on each of its connections instead:
such a value is shown at the nearest end of what Python holds, or replaced by a note,
and everything else reads as before.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.adapt import Buffer, Loader
from psycopg.pq import Format
from psycopg.types.json import set_json_loads

# Where a timestamp Python cannot hold is shown: before year 1 (BC, -infinity) at the
# first instant of year 1, after year 9999 (or infinity) at the last one.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)

# Deeper JSON is cut here: no report the agents send nests more than a few levels, and
# the pages' JSON rendering recurses once per level (Python's limit is 1,000 frames).
MAX_JSON_DEPTH = 64
CUT_JSON = f"… (nested deeper than {MAX_JSON_DEPTH} levels; cut by the console)"
UNREADABLE_JSON = "… (JSON nested too deep to read; the console does not show it)"


def _timestamp_before_year_1(data: Buffer, fmt: Format) -> bool:
    """Whether a timestamp psycopg refused lies before year 1 (else after 9999)."""
    if fmt == Format.BINARY:
        # Microseconds since 2000-01-01 as a signed 64-bit integer; -infinity is the min.
        return int.from_bytes(bytes(data)[:8], "big", signed=True) < 0
    text = bytes(data).strip()
    return text.startswith(b"-infinity") or text.endswith(b"BC")


class _ClampedTimestamptz(Loader):
    """psycopg's own timestamptz loader, with the values it refuses clamped."""

    base: type[Loader]

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self._base = self.base(oid, context)

    def load(self, data: Buffer) -> datetime:
        try:
            loaded = self._base.load(data)
        except psycopg.DataError:
            return EARLIEST if _timestamp_before_year_1(data, self.format) else LATEST
        assert isinstance(loaded, datetime)
        return loaded


def _clamped_loader(fmt: Format) -> type[Loader]:
    base = psycopg.adapters.get_loader(psycopg.adapters.types["timestamptz"].oid, fmt)
    assert base is not None, "psycopg has a timestamptz loader for both formats"
    return type(f"ClampedTimestamptz{fmt.name.title()}", (_ClampedTimestamptz,),
                {"base": base, "format": fmt})  # fmt: skip


_CLAMPED = {fmt: _clamped_loader(fmt) for fmt in (Format.TEXT, Format.BINARY)}


def _int_or_digits(digits: str) -> int | str:
    """An integer literal as ``int``, or as its text when Python refuses to convert it
    (more than ``sys.get_int_max_str_digits()`` digits)."""
    try:
        return int(digits)
    except ValueError:
        return digits


def cut_deep_json(value: Any, limit: int = MAX_JSON_DEPTH) -> Any:
    """``value`` with every array or object below ``limit`` levels replaced by CUT_JSON;
    iterative, so any depth Python could parse is cut without recursing."""
    if not isinstance(value, dict | list):
        return value
    stack: list[tuple[dict[Any, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        keys = list(container) if isinstance(container, dict) else range(len(container))
        for key in keys:
            child = container[key]
            if isinstance(child, dict | list):
                if depth >= limit:
                    container[key] = CUT_JSON
                else:
                    stack.append((child, depth + 1))
    return value


def _parse(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except ValueError:  # PostgreSQL's JSON is valid: an integer too long for int()
        return json.loads(data, parse_int=_int_or_digits)


def load_json(data: bytes | str) -> Any:
    """A json/jsonb value as Python, whatever PostgreSQL accepted."""
    try:
        value = _parse(data)
    except RecursionError:
        return UNREADABLE_JSON
    raw = data.encode() if isinstance(data, str) else data
    # Cheap bound first: fewer brackets than the limit cannot nest deeper than it.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
        value = cut_deep_json(value)
    return value


def register(connection: psycopg.Connection[Any]) -> None:
    """Read timestamps and JSON on ``connection`` with the loaders above."""
    for loader in _CLAMPED.values():
        connection.adapters.register_loader("timestamptz", loader)
    set_json_loads(load_json, connection)
