"""Several ingest processes on one shared subscription (``[ingest] workers``).

One Python process decodes and writes on one core; ``workers = N`` runs N processes,
each with a persistent session of its own on ``$share/<group>/...``, so that the
broker splits the fleet's messages between them. The supervisor here restarts a
worker that dies under the same client id: its session at the broker holds the
messages it had not acknowledged, and only that client id gets them back.

Worker 0 keeps the configured client id and metrics port (so ``/healthz`` stays where
it was) and alone runs the daily retention job, the gap repair and the retiring of
old sessions; worker i uses ``<client_id>-i`` and ``metrics_port + i``. The alert
sweep and the notification outbox run in every worker: both claim their rows with
locks that let several processes share them.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from shared.settings import IngestSettings

log = logging.getLogger(__name__)

DEFAULT_SHARED_GROUP = "ingest"


def worker_settings(settings: IngestSettings, index: int) -> IngestSettings:
    """Worker ``index``'s settings: own client id and metrics port, the shared group."""
    if settings.workers == 1:
        return settings
    port = settings.metrics_port + index if settings.metrics_port else 0
    return settings.model_copy(
        update={
            "client_id": settings.client_id if index == 0 else f"{settings.client_id}-{index}",
            "shared_group": settings.shared_group or DEFAULT_SHARED_GROUP,
            "metrics_port": port,
        }
    )


@dataclass
class RestartPolicy:
    """Wait longer before each restart of a worker that keeps dying young (pure)."""

    first_s: float = 1.0
    max_s: float = 30.0
    healthy_after_s: float = 60.0  # a worker that lived this long starts over at first_s

    def delay(self, previous_delay: float | None, lived_s: float) -> float:
        if previous_delay is None or lived_s >= self.healthy_after_s:
            return self.first_s
        return min(self.max_s, previous_delay * 2)


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    started_at: float
    restart_delay: float | None = None


def supervise(
    count: int,
    start: Callable[[int], BaseProcess],
    policy: RestartPolicy | None = None,
    stop_timeout_s: float = 60.0,
) -> int:
    """Run ``count`` workers from ``start(index)`` until SIGTERM or SIGINT; 0 on a clean stop.

    A worker that exits on its own is started again (same index) after the policy's
    delay. On a signal every worker gets SIGTERM and commits its last batch; one still
    running after ``stop_timeout_s`` is killed (its messages stay at the broker).
    """
    policy = policy or RestartPolicy()
    stopping = False

    def on_signal(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    workers = [_Worker(i, start(i), time.monotonic()) for i in range(count)]
    try:
        while not stopping:
            multiprocessing.connection.wait([w.process.sentinel for w in workers], timeout=0.5)
            for worker in workers:
                if stopping or worker.process.is_alive():
                    continue
                _restart(worker, start, policy, lambda: stopping)
        return _stop_all(workers, stop_timeout_s)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _restart(
    worker: _Worker,
    start: Callable[[int], BaseProcess],
    policy: RestartPolicy,
    stopping: Callable[[], bool],
) -> None:
    lived = time.monotonic() - worker.started_at
    worker.restart_delay = policy.delay(worker.restart_delay, lived)
    log.error(
        "ingest worker %d exited with code %s after %.0f s; starting it again in %.0f s",
        worker.index,
        worker.process.exitcode,
        lived,
        worker.restart_delay,
    )
    deadline = time.monotonic() + worker.restart_delay
    while time.monotonic() < deadline and not stopping():
        time.sleep(0.1)
    if not stopping():
        worker.process = start(worker.index)
        worker.started_at = time.monotonic()


def _stop_all(workers: list[_Worker], timeout_s: float) -> int:
    for worker in workers:
        if worker.process.is_alive() and worker.process.pid is not None:
            worker.process.terminate()
    deadline = time.monotonic() + timeout_s
    code = 0
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            log.error("ingest worker %d did not stop in time; killing it", worker.index)
            worker.process.kill()
            worker.process.join()
            code = 1
        elif worker.process.exitcode not in (0, -signal.SIGTERM):
            code = 1
    return code


def fork_context() -> Any:
    """fork: workers inherit the loaded settings and modules, and start in milliseconds."""
    return multiprocessing.get_context("fork")
