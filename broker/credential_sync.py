"""What both broker services share about following credential changes (pure timing and
a counter): the NOTIFY channel, how changes are coalesced into one reload, and the
tracker a caller waits on until its committed change is live at the broker.

Its own module so that the Mosquitto service (broker/service.py) and the amqtt one
(broker/amqtt_service.py) both depend on it instead of on each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

CHANNEL = "tms_credentials"
POLL_S = 0.25  # how often the loop looks at the stop event and Mosquitto's health
COALESCE_S = 0.05  # notifications arriving this close together cause one reload
COALESCE_MAX_S = 1.0
RETRY_S = 2.0


class SyncTracker:
    """Counts credential syncs so a caller can wait until its committed change is live."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._started = 0
        self._finished = 0

    def begin(self) -> None:
        with self._changed:
            self._started += 1

    def finish(self) -> None:
        with self._changed:
            self._finished += 1
            self._changed.notify_all()

    def wait_after(self, prompt: Callable[[], None], timeout: float) -> bool:
        """Run ``prompt`` (it must cause a sync, e.g. a NOTIFY), then block until a sync
        begun since has finished; False on timeout.

        Counting from before ``prompt`` matters: a caller that counted after its commit
        could miss the sync the commit had already started, and wait for one that
        nothing causes. Syncs run one at a time and read the database when they begin.
        """
        with self._changed:
            target = self._started + 1
        prompt()
        with self._changed:
            return self._changed.wait_for(lambda: self._finished >= target, timeout)
