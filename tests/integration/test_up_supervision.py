"""`tms up` restarts a part that dies, while the others keep running and the console
keeps answering; /healthz shows the restarts; a part that cannot start at all stops
the platform with the reason. Against a real `tms up`, its PostgreSQL and Mosquitto.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from shared.ports import PortInUseError, ensure_port_free, port_accepts
from tests.integration.platform import Platform, make_data_dir, running_platform
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

# Fast restarts, so the test spends its time on the parts, not on waiting.
FAST = {
    "TMS_SUPERVISION_RESTART_DELAY_S": "0.1",
    "TMS_SUPERVISION_RESTART_DELAY_MAX_S": "1",
    "TMS_SUPERVISION_GIVE_UP_AFTER": "3",
}


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _health(platform: Platform) -> tuple[int, dict[str, Any]]:
    return _get(f"{platform.console_url}/healthz")


def _health_status(platform: Platform) -> int | None:
    try:
        return _health(platform)[0]
    except (OSError, ValueError, http.client.HTTPException):
        return None


def _part(platform: Platform, name: str) -> dict[str, Any]:
    _, body = _health(platform)
    part: dict[str, Any] = body["platform"]["parts"][name]
    return part


def _back_with_restarts(platform: Platform, name: str, restarts: int) -> dict[str, Any]:
    """The part's status once it runs again after ``restarts`` restarts, else {}."""
    try:
        part = _part(platform, name)
    except (OSError, ValueError, http.client.HTTPException):
        # Not answering yet, or an answer cut short by the restart it is waiting for.
        return {}
    if part["state"] == "running" and part["restarts"] == restarts:
        return part
    return {}


def _tree(platform: Platform) -> list[psutil.Process]:
    assert platform.process is not None
    return psutil.Process(platform.process.pid).children(recursive=True)


def _mosquitto(broker_pid: int) -> psutil.Process | None:
    found = [p for p in psutil.Process(broker_pid).children() if "mosquitto" in p.name()]
    return found[0] if found else None


def _port_free(port: int) -> bool:
    try:
        ensure_port_free("127.0.0.1", port, "test", "-")
    except PortInUseError:
        return False
    return True


class ConsoleWatch:
    """Asks the console's /healthz all along, and keeps every answer that was not 200."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.failures: list[str] = []
        self.asked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                status, body = _health(self.platform)
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            self.asked += 1
            if status != 200:
                self.failures.append(f"{status} {body}")

    def __enter__(self) -> ConsoleWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def platform() -> Iterator[Platform]:
    # One simulated terminal: the simulator is a part too, and must ride out the kills.
    with running_platform(simulate=1, extra_env=FAST) as running:
        wait_until(
            lambda: _health(running)[1]["platform"]["state"] == "ok",
            "every part of the platform running",
        )
        yield running


def _stop_and_check_nothing_is_left(platform: Platform, seen: set[psutil.Process]) -> None:
    assert platform.stop() == 0, platform.text
    survivors = lambda: [  # noqa: E731
        f"{p.pid} {p.name()}" for p in seen if p.is_running() and p.status() != "zombie"
    ]
    wait_until(lambda: not survivors(), lambda: f"no process left, but: {survivors()}")
    ports = [platform.db_port, platform.broker_port, platform.console_port, platform.metrics_port]
    held = lambda: [port for port in ports if not _port_free(port)]  # noqa: E731
    wait_until(lambda: not held(), lambda: f"every port free, but held: {held()}")


def test_ingest_and_mosquitto_killed_come_back_while_the_console_answers(
    platform: Platform,
) -> None:
    seen = set(_tree(platform))
    before = _health(platform)[1]["platform"]["parts"]
    metrics = f"http://127.0.0.1:{platform.metrics_port}/healthz"

    with ConsoleWatch(platform) as console:
        os.kill(before["ingest"]["pid"], signal.SIGKILL)
        ingest = wait_until(
            lambda: _back_with_restarts(platform, "ingest", 1), "ingest restarted once"
        )
        assert ingest["pid"] != before["ingest"]["pid"]
        assert ingest["last_exit"]["ending"] == "killed by SIGKILL"
        # Its port answers again: ingest is subscribed and reaches PostgreSQL.
        wait_until(lambda: _get(metrics)[0] == 200, "ingest's /healthz to answer 200")
        seen |= set(_tree(platform))

        broker_pid = before["broker"]["pid"]
        mosquitto = _mosquitto(broker_pid)
        assert mosquitto is not None
        mosquitto.send_signal(signal.SIGKILL)
        broker = wait_until(
            lambda: _back_with_restarts(platform, "broker", 1), "the broker restarted once"
        )
        assert broker["last_exit"]["error"].startswith("Error: Mosquitto stopped unexpectedly")
        assert port_accepts("127.0.0.1", platform.broker_port)
        seen |= set(_tree(platform))

        # A clean stop of Mosquitto by someone else is an end all the same.
        second = _mosquitto(broker["pid"])
        assert second is not None and second.pid != mosquitto.pid
        second.send_signal(signal.SIGTERM)
        wait_until(lambda: _back_with_restarts(platform, "broker", 2), "the broker restarted twice")
        assert port_accepts("127.0.0.1", platform.broker_port)
        # Ingest found the new broker by itself, without a restart of its own.
        wait_until(
            lambda: _get(metrics)[1].get("broker_connected") is True,
            "ingest connected to the restarted broker",
        )
        seen |= set(_tree(platform))

    after = _health(platform)[1]["platform"]
    assert after["state"] == "ok"
    for name in ("postgres", "console", "commands", "rollouts", "simulator"):
        assert after["parts"][name]["restarts"] == 0, after
        assert after["parts"][name]["pid"] == before[name]["pid"], name
    assert after["parts"]["ingest"]["restarts"] == 1
    # The console answered all along: none of this reached it.
    assert console.asked > 10 and console.failures == [], console.failures
    text = platform.text
    assert "tms up: ingest ended (killed by SIGKILL) after " in text
    assert "; restart 1 in 0.1 s" in text
    assert "tms up: broker ended (exit code 1: Error: Mosquitto stopped unexpectedly" in text
    assert "tms up: broker is running again" in text
    _stop_and_check_nothing_is_left(platform, seen)


def test_killed_postgres_is_restarted_and_the_console_reaches_it_again(
    platform: Platform,
) -> None:
    seen = set(_tree(platform))
    before = _part(platform, "postgres")
    os.kill(before["pid"], signal.SIGKILL)
    postgres = wait_until(
        lambda: _back_with_restarts(platform, "postgres", 1), "PostgreSQL restarted once", 60
    )
    assert postgres["pid"] != before["pid"]
    assert postgres["last_exit"]["ending"] == "killed by SIGKILL"
    # The console's pool reconnects by itself: its /healthz reaches the database again.
    wait_until(lambda: _health_status(platform) == 200, "the console to reach PostgreSQL again")
    assert _part(platform, "console")["restarts"] == 0
    seen |= set(_tree(platform))
    _stop_and_check_nothing_is_left(platform, seen)


def test_a_part_that_cannot_start_stops_the_platform_with_the_reason() -> None:
    data_dir = make_data_dir()
    broken = {**FAST, "TMS_BROKER_MOSQUITTO_BINARY": str(data_dir / "no-such-mosquitto")}
    running = Platform(data_dir, extra_env=broken)
    with pytest.raises(AssertionError, match="tms up did not start"):
        running.start()
    assert running.process is not None and running.process.returncode == 1
    reason = [line for line in running.output if "cannot start" in line]
    assert len(reason) == 1, running.text
    assert reason[0].startswith(
        "tms up: broker cannot start: it failed to start 3 times in a row in "
    )
    assert "(last: exit code 1); stopping the platform." in reason[0]
    assert "Error: Mosquitto not found" in reason[0]
    assert "TMS stopped." in running.text
    status = json.loads((data_dir / "platform-status.json").read_text())
    assert status["state"] == "stopped"
    assert status["parts"]["broker"]["state"] == "failed"
    assert status["parts"]["broker"]["restarts"] == 2
    # Nothing of it is left running.
    left = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(data_dir) in " ".join(p.info["cmdline"] or [])
    ]
    assert not left
