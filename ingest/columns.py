"""Rows to columns: the shape PostgreSQL's ``unnest(array, array, ...)`` takes (pure).

Binding one array per column and joining ``unnest`` writes a whole batch in one
statement, where ``executemany`` would send a statement per row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def as_columns(rows: Iterable[tuple[Any, ...]], width: int) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns
