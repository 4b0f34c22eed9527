"""The simulated fleet's worker processes: a worker killed outright does not hang the parent."""

from __future__ import annotations

import os
import signal

import pytest

from agent.sim.fleet import FleetSummary
from agent.sim.fleet_processes import run_in_processes


def _slice(terminals: list[tuple[str, str]]) -> FleetSummary:
    if terminals[0][0] == "T-0":
        os.kill(os.getpid(), signal.SIGKILL)  # dies before it can report
    return FleetSummary(len(terminals), len(terminals), 0, 0, 0, 0, 0)


@pytest.mark.timeout(60)  # the bug this guards against is a parent that waits for ever
def test_a_killed_worker_is_not_waited_for() -> None:
    terminals = [(f"T-{n}", "secret") for n in range(4)]
    summary = run_in_processes(terminals, 2, _slice)
    # The surviving worker's two terminals are counted; the killed one's are not.
    assert summary == FleetSummary(2, 2, 0, 0, 0, 0, 0)
