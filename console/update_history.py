"""A terminal's firmware updates, newest first: its part in each rollout (``update_task``)
with the rollout's name and the versions from and to, for the terminal page and the API.

A repository module: the terminal page's blueprint hands it the request's ``Session``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

UPDATES_SHOWN = 20

# Newest first by when the task was made (with the rollout); a terminal is in at most
# one unfinished rollout, so that is also the order its updates ran in.
SQL_UPDATES = """
SELECT u.rollout_id, r.name, u.wave, u.from_version, f.version, u.version_after, u.state,
       u.percent, u.failure, u.reason, u.attempts, u.started_at, u.finished_at
FROM terminal t
JOIN update_task u ON u.terminal_id = t.id
JOIN rollout r ON r.id = u.rollout_id
JOIN firmware f ON f.id = u.firmware_id
WHERE t.serial = :serial
ORDER BY u.created_at DESC, u.id DESC
LIMIT :limit
"""


@dataclass(frozen=True)
class UpdateEntry:
    """One rollout's update of the terminal, in whatever state it has reached."""

    rollout_id: int
    rollout_name: str
    wave: int
    from_version: str | None  # what it ran when the rollout took it up, if known
    to_version: str  # the release the rollout pushes
    version_after: str | None  # what it reported when its update ended
    state: str  # rollouts.tasks.TaskState
    percent: float | None  # of the download, while downloading
    failure: str | None  # one word
    reason: str | None  # a sentence for people
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "rollout": self.rollout_name,
            "wave": self.wave,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "version_after": self.version_after,
            "state": self.state,
            "percent": self.percent,
            "failure": self.failure,
            "reason": self.reason,
            "attempts": self.attempts,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def terminal_updates(
    session: Session, serial: str, limit: int = UPDATES_SHOWN
) -> list[UpdateEntry]:
    """The terminal's updates, newest first, at most ``limit``."""
    rows = session.execute(text(SQL_UPDATES), {"serial": serial, "limit": limit})
    return [UpdateEntry(*row) for row in rows]
