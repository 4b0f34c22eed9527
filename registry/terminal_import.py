"""Bulk terminal import: a CSV file parsed and checked as a whole (pure, no database).

The file has a header row with the columns ``serial``, ``customer`` and optionally
``store``. Every row is checked before anything is written; ``parse_terminal_csv``
returns every bad row with its line number, so an operator fixes the file in one go.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared import topics

REQUIRED_COLUMNS = ("serial", "customer")
OPTIONAL_COLUMNS = ("store",)
MAX_NAME_LENGTH = 200
MAX_STORE_CODE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int
    serial: str
    customer: str
    store: str | None


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ParsedImport:
    rows: tuple[ImportRow, ...]
    problems: tuple[RowProblem, ...]


def _header_problems(fieldnames: Sequence[str] | None) -> list[RowProblem]:
    if not fieldnames:
        return [RowProblem(1, "the file is empty: expected a header row 'serial,customer,store'")]
    names = [name.strip().lower() for name in fieldnames]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    unknown = [n for n in names if n not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    problems = []
    if missing:
        problems.append(RowProblem(1, f"header lacks column(s) {', '.join(missing)}"))
    if unknown:
        problems.append(
            RowProblem(1, f"unknown column(s) {', '.join(unknown)}: use serial, customer, store")
        )
    return problems


def _row_problems(row: ImportRow, seen: dict[str, int]) -> list[str]:
    reasons = []
    if not topics.is_valid_serial(row.serial):
        reasons.append(
            f"invalid serial {row.serial!r}: 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    elif row.serial in seen:
        reasons.append(f"serial {row.serial} already appears on line {seen[row.serial]}")
    if not row.customer:
        reasons.append("customer is empty")
    elif len(row.customer) > MAX_NAME_LENGTH:
        reasons.append(f"customer name longer than {MAX_NAME_LENGTH} characters")
    if row.store is not None and len(row.store) > MAX_STORE_CODE_LENGTH:
        reasons.append(f"store code longer than {MAX_STORE_CODE_LENGTH} characters")
    return reasons


def parse_terminal_csv(text: str) -> ParsedImport:
    """Every row of the file, and every problem found in it (by line number)."""
    reader = csv.DictReader(io.StringIO(text))
    problems = _header_problems(reader.fieldnames)
    if problems:
        return ParsedImport((), tuple(problems))
    assert reader.fieldnames is not None
    reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
    rows: list[ImportRow] = []
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if None in record:
            problems.append(RowProblem(line, "more fields than the header has columns"))
            continue
        values = {key: (value or "").strip() for key, value in record.items()}
        if not any(values.values()):
            continue  # blank line
        row = ImportRow(line, values["serial"], values["customer"], values.get("store") or None)
        reasons = _row_problems(row, seen)
        problems.extend(RowProblem(line, reason) for reason in reasons)
        if not reasons:
            seen[row.serial] = line
            rows.append(row)
    if not rows and not problems:
        problems.append(RowProblem(1, "the file has a header but no terminals"))
    return ParsedImport(tuple(rows), tuple(problems))


def clashes(rows: Iterable[ImportRow], taken_usernames: set[str]) -> list[RowProblem]:
    """Rows whose serial is already a terminal or broker account in the database."""
    return [
        RowProblem(row.line, f"serial {row.serial} is already registered (terminal or account)")
        for row in rows
        if row.serial in taken_usernames
    ]
