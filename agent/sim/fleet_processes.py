"""A large simulated fleet split over worker processes, one event loop each.

Idle simulated terminals cost about 1% of a core per 1,000 at a 100 s heartbeat
(bench/simulate.py, 2 December 2026), but connecting, short heartbeats and firmware
transfers do not: a large fleet is spread over processes so that it can use more than the
one core a Python process can. Each worker runs
``run_fleet`` on its slice of the terminals; SIGTERM to the parent is passed on to every
worker, and the parent logs the fleet's combined summary once all have stopped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
from collections.abc import Callable
from dataclasses import fields
from multiprocessing.queues import Queue
from typing import Any

from agent.sim.fleet import FleetSummary
from shared.lifetime import die_with_parent

log = logging.getLogger(__name__)

# Below this many terminals one process is enough (and keeps logs in one place).
SINGLE_PROCESS_MAX = 2000
WORKER_STOP_S = 120.0


def worker_count(terminals: int, requested: int) -> int:
    """``requested`` if set, else one worker per CPU for fleets above SINGLE_PROCESS_MAX."""
    if requested > 0:
        return max(1, min(requested, terminals))
    if terminals <= SINGLE_PROCESS_MAX:
        return 1
    return max(1, min(os.cpu_count() or 1, terminals))


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` in ``parts`` slices of sizes differing by at most one, order kept."""
    size, extra = divmod(len(items), parts)
    slices, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        slices.append(items[start:end])
        start = end
    return slices


def combine(summaries: list[FleetSummary]) -> FleetSummary:
    return FleetSummary(
        **{f.name: sum(getattr(s, f.name) for s in summaries) for f in fields(FleetSummary)}
    )


def _worker(
    run_slice: Callable[[list[tuple[str, str]]], FleetSummary],
    terminals: list[tuple[str, str]],
    results: Queue[FleetSummary],
    parent_pid: int,
) -> None:
    # A fleet must not go on publishing after its parent was killed with SIGKILL.
    die_with_parent(parent_pid)
    summary = FleetSummary(len(terminals), 0, 0, 0, 0, 0, 0)
    try:
        summary = run_slice(terminals)
    finally:
        # Always answer, so the parent never waits for a worker that failed.
        results.put(summary)


def _collect(results: Queue[FleetSummary], workers: list[Any]) -> list[FleetSummary]:
    """Each worker's summary; one killed before it could answer is not waited for."""
    summaries: list[FleetSummary] = []
    while len(summaries) < len(workers):
        try:
            summaries.append(results.get(timeout=0.5))
        except queue.Empty:
            if not any(worker.is_alive() for worker in workers) and results.empty():
                log.error(
                    "%d fleet process(es) died without a summary", len(workers) - len(summaries)
                )
                break
    return summaries


def run_in_processes(
    terminals: list[tuple[str, str]],
    processes: int,
    run_slice: Callable[[list[tuple[str, str]]], FleetSummary],
) -> FleetSummary:
    """Run ``run_slice`` on ``processes`` slices of ``terminals`` in forked workers.

    ``run_slice`` runs until SIGTERM or SIGINT (it installs its own handlers); the
    parent waits, forwarding those signals to the workers.
    """
    context = multiprocessing.get_context("fork")
    results: Queue[FleetSummary] = context.Queue()
    workers = [
        context.Process(
            target=_worker, args=(run_slice, part, results, os.getpid()), name=f"fleet-{n}"
        )
        for n, part in enumerate(split(terminals, processes))
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        summaries = _collect(results, workers)
        for worker in workers:
            worker.join(WORKER_STOP_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = combine(summaries)
    log.info("fleet of %d processes stopped: %s", len(workers), summary)
    return summary
