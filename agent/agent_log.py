"""The agent's recent log lines in memory: a bounded ring fed by a ``logging.Handler``.

``fetch_logs`` and the diagnostics report read the agent's own log from here rather
than from ``[agent] log_path``, so they work without a log file and for simulated
agents too (a fleet process shares one ring; each terminal reads the lines naming it).
A command result must fit in one MQTT message (``MAX_PAYLOAD_BYTES``), so lines are
cut to a length and a tail is cut to a byte budget, newest lines kept.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RING_LINES = 5000
LINE_MAX_CHARS = 500


class LogRing(logging.Handler):
    """The last ``capacity`` lines logged in this process, formatted as the log file has them."""

    def __init__(self, capacity: int = RING_LINES, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.capacity = capacity
        self._lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # logging's own contract: a bad record must not raise
            self.handleError(record)
            return
        # A traceback is several lines; each is one line of the tail, as in the file.
        for line in text.splitlines() or [""]:
            self._lines.append(line[:LINE_MAX_CHARS])

    def __len__(self) -> int:
        return len(self._lines)

    def tail(self, count: int, containing: str | None = None) -> list[str]:
        """The last ``count`` lines, oldest first; with ``containing``, only lines holding it."""
        if count <= 0:
            return []
        self.acquire()  # emit runs under the same lock, from any thread
        try:
            lines = list(self._lines)
        finally:
            self.release()
        if containing is None:
            return lines[-count:]
        # A comprehension over the whole ring is faster than a loop that stops early:
        # a fleet process reads it once per terminal.
        return [line for line in lines if containing in line][-count:]


def install_log_ring(root: logging.Logger | None = None, capacity: int = RING_LINES) -> LogRing:
    """The process's ring on the root logger, added on first use (idempotent)."""
    root = root if root is not None else logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, LogRing):
            return handler
    ring = LogRing(capacity)
    root.addHandler(ring)
    return ring


def newest_within(lines: Iterable[str], budget_bytes: int) -> tuple[list[str], bool]:
    """The newest of ``lines`` (oldest first) whose JSON strings fit ``budget_bytes``.

    Returns the kept lines, oldest first, and whether any were left out. Sized as
    ASCII-escaped JSON, which is never smaller than what pydantic writes.
    """
    kept: list[str] = []
    used = 0
    ordered = list(lines)
    for line in reversed(ordered):
        size = len(json.dumps(line)) + 1  # the separating comma
        if used + size > budget_bytes:
            break
        kept.append(line)
        used += size
    kept.reverse()
    return kept, len(kept) < len(ordered)
