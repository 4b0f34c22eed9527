"""Every process TMS starts dies with its parent: a SIGKILL leaves no orphan, no port held.

The tree under `tms up` is PostgreSQL, `tms broker` (with Mosquitto), `tms ingest` (with
two workers), the console and `tms simulate` (with two fleet processes). Killing a
parent with SIGKILL gives it no chance to stop its children, so only the kernel's
parent-death signal can: these tests kill the supervisor, then the middle layer, and
look for any survivor and any port still bound (`tms up` restarts a killed part, and
stops the new one with the rest).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import psutil
import pytest

from shared.ports import PortInUseError, ensure_port_free
from tests.integration.platform import Platform, running_platform
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

WORKERS = 2
FLEET_PROCESSES = 2


def _port_free(port: int) -> bool:
    try:
        ensure_port_free("127.0.0.1", port, "test", "-")
    except PortInUseError:
        return False
    return True


def _tms_child(root: psutil.Process, subcommand: str) -> psutil.Process | None:
    for child in root.children():
        try:
            # python -m tms <subcommand> ...
            if child.cmdline()[1:4] == ["-m", "tms", subcommand]:
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def _full_tree(root: psutil.Process) -> dict[str, psutil.Process] | None:
    """The platform's processes by role once every one of them has started, else None."""
    found: dict[str, psutil.Process] = {}
    for name in ("broker", "ingest", "console", "simulate"):
        child = _tms_child(root, name)
        if child is None:
            return None
        found[name] = child
    try:
        mosquitto = [p for p in found["broker"].children() if "mosquitto" in p.name()]
        workers = found["ingest"].children()
        fleet = found["simulate"].children()
        postgres = [p for p in root.children() if p.name() == "postgres"]
    except psutil.NoSuchProcess:
        return None
    # multiprocessing may add a resource tracker beside the fleet processes.
    if len(mosquitto) != 1 or len(workers) < WORKERS or len(fleet) < FLEET_PROCESSES:
        return None
    if len(postgres) != 1:
        return None
    found["mosquitto"] = mosquitto[0]
    found["postgres"] = postgres[0]
    for index, worker in enumerate(workers):
        found[f"ingest worker {index}"] = worker
    for index, process in enumerate(fleet):
        found[f"fleet process {index}"] = process
    return found


@pytest.fixture
def platform() -> Iterator[Platform]:
    options = {"TMS_INGEST_WORKERS": str(WORKERS), "TMS_SIMULATE_PROCESSES": str(FLEET_PROCESSES)}
    with running_platform(simulate=4, extra_env=options) as running:
        yield running


def _ports(platform: Platform) -> list[int]:
    ports = [platform.db_port, platform.broker_port, platform.console_port]
    return ports + [platform.metrics_port + i for i in range(WORKERS)]


def _processes(platform: Platform) -> dict[str, psutil.Process]:
    assert platform.process is not None
    root = psutil.Process(platform.process.pid)
    return wait_until(lambda: _full_tree(root) or {}, "every process of the platform to start", 60)


def _assert_all_gone(platform: Platform, processes: dict[str, psutil.Process]) -> None:
    def survivors() -> list[str]:
        return [
            f"{role} (pid {p.pid})"
            for role, p in processes.items()
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        ]

    wait_until(lambda: not survivors(), lambda: f"no survivors, but: {survivors()}", 60)
    held = lambda: [port for port in _ports(platform) if not _port_free(port)]  # noqa: E731
    wait_until(lambda: not held(), lambda: f"every port free, but held: {held()}", 30)


def test_sigkill_of_tms_up_stops_every_process_it_started(platform: Platform) -> None:
    processes = _processes(platform)
    assert platform.process is not None
    os.kill(platform.process.pid, signal.SIGKILL)
    platform.process.wait(30)
    # At once, while the killed platform's parts may still be letting go of their ports.
    platform.start()
    assert platform.stop() == 0, platform.text
    _assert_all_gone(platform, processes)


def test_sigkill_of_each_parent_takes_its_children_with_it(platform: Platform) -> None:
    processes = _processes(platform)
    # The middle layer: each of these has children of its own.
    for role in ("broker", "ingest", "simulate"):
        os.kill(processes[role].pid, signal.SIGKILL)
    assert platform.process is not None
    # Only the parent-death signal reaches the grandchildren: Mosquitto, the ingest
    # workers and the fleet processes go with their killed parents, while `tms up`
    # restarts those parents (each with new children).
    orphans = {
        role: p
        for role, p in processes.items()
        if role == "mosquitto" or role.startswith(("ingest worker", "fleet process"))
    }

    def alive() -> list[str]:
        return [
            f"{role} (pid {p.pid})"
            for role, p in orphans.items()
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        ]

    wait_until(lambda: not alive(), lambda: f"no orphan, but: {alive()}", 60)
    root = psutil.Process(platform.process.pid)
    restarted = wait_until(lambda: _full_tree(root) or {}, "the killed parts to come back", 120)
    assert all(restarted[role].pid != processes[role].pid for role in ("broker", "ingest"))
    assert platform.stop() == 0, platform.text
    _assert_all_gone(platform, processes | {f"new {r}": p for r, p in restarted.items()})
