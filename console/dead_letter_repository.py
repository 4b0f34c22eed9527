"""The dead letters as the console reads them: counts by reason and the latest messages.

Ingest writes the ``dead_letter`` table; the console only reads it, and only a
payload's first bytes, so one huge message never slows the screen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlmodel import Session

PREVIEW_BYTES = 300

SQL_REASONS = """
SELECT reason, count(*), max(received_at) FROM dead_letter GROUP BY reason ORDER BY 2 DESC
"""
SQL_RECENT = """
SELECT id, received_at, topic, reason, detail,
       substring(payload from 1 for :preview), length(payload)
FROM dead_letter WHERE (:reason = '' OR reason = :reason) ORDER BY id DESC LIMIT :limit
"""


@dataclass(frozen=True)
class DeadLetterRow:
    id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    payload_head: bytes
    payload_size: int

    @property
    def preview(self) -> str:
        """The payload's start as text; bytes that are not UTF-8 shown escaped."""
        text_ = self.payload_head.decode("utf-8", "backslashreplace")
        return text_ + ("…" if self.payload_size > len(self.payload_head) else "")


def reason_counts(session: Session) -> list[tuple[str, int, datetime]]:
    return [(row[0], row[1], row[2]) for row in session.execute(text(SQL_REASONS))]


def recent(session: Session, reason: str, limit: int = 200) -> list[DeadLetterRow]:
    params = {"reason": reason, "limit": limit, "preview": PREVIEW_BYTES}
    return [DeadLetterRow(*row) for row in session.execute(text(SQL_RECENT), params)]
