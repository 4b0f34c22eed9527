"""`tms` commands find the platform by its data directory, running or stopped, and leave
nothing running that was not running before."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from shared.ports import free_port
from tests.integration.platform import (
    SECRET_RE,
    Platform,
    clean_env,
    make_data_dir,
    running_platform,
    tms,
)
from tests.integration.test_end_to_end import _api_get, _connect_when_accepted
from tms.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
def platform() -> Iterator[Platform]:
    with running_platform() as running:
        yield running


def _processes_using(path: Path) -> list[str]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(f"{process.pid}: {cmdline}")
    return found


def test_a_second_shell_needs_only_the_data_directory(platform: Platform) -> None:
    by_env = clean_env(TMS_DATA_DIR=str(platform.data_dir))  # no TMS_DATABASE_URL
    by_option = ["--data-dir", str(platform.data_dir)]

    added = tms("terminal", "add", "DD-1", "--customer", "Acme", env=by_env)
    assert added.returncode == 0, added.stderr
    secret = SECRET_RE.findall(added.stdout)[-1]
    account = tms(*by_option, "account", "add", "script-1", "--role", "support-script")
    assert account.returncode == 0, account.stderr
    issued = tms(*by_option, "user", "token", "admin", "--name", "support")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    # Nothing about a stopped platform: these reached the running one.
    assert "not running" not in added.stderr + account.stderr + issued.stderr

    # The terminal's secret is live at the broker and the token at the API.
    client = _connect_when_accepted(platform, "DD-1", secret)
    client.loop_stop()
    client.disconnect()
    status, body = _api_get(platform, "/api/v1/terminals", token)
    assert status == 200
    assert "DD-1" in {t["serial"] for t in body["terminals"]}


def test_a_stopped_platform_is_opened_for_one_command_and_closed_again(
    platform: Platform,
) -> None:
    issued = tms("--data-dir", str(platform.data_dir), "user", "token", "admin", "--name", "t")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert platform.stop() == 0
    assert not _processes_using(platform.data_dir)
    env = clean_env(TMS_DATA_DIR=str(platform.data_dir))

    added = tms("terminal", "add", "DD-2", "--customer", "Acme", env=env)
    assert added.returncode == 0, added.stderr
    assert "not running; its database is opened for this command only" in added.stderr
    listed = tms("account", "list", "--all", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "DD-2" in listed.stdout
    # Nothing was left running, and nothing listens on the platform's port.
    assert not _processes_using(platform.data_dir)
    assert not (platform.data_dir / "postgres" / "data" / "postmaster.pid").exists()

    # A daemon does not keep a stopped platform's database up for itself.
    ingest = tms(
        "ingest",
        env={**env, "TMS_INGEST_MQTT_USERNAME": "tms-ingest", "TMS_INGEST_MQTT_PASSWORD": "x"},
    )
    assert ingest.returncode == 1
    assert ingest.stderr.strip().splitlines() == [
        f"Error: the platform in {platform.data_dir} is not running: start it with "
        f"`tms up --data-dir {platform.data_dir}`, or set TMS_DATABASE_URL"
    ]

    platform.start()
    status, body = _api_get(platform, "/api/v1/terminals/DD-2", token)
    assert status == 200, body


def test_a_directory_without_a_platform_is_one_clear_line(tmp_path: Path) -> None:
    result = tms("--data-dir", str(tmp_path / "nothing"), "terminal", "add", "X", "--customer", "Y")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: no TMS platform in {tmp_path / 'nothing'} (secrets.json is missing): start one "
        f"with `tms up --data-dir {tmp_path / 'nothing'}`, or set TMS_DATABASE_URL"
    ]


def test_commands_on_a_stopped_platform_at_once_each_get_the_database(
    platform: Platform,
) -> None:
    assert platform.stop() == 0
    env = clean_env(TMS_DATA_DIR=str(platform.data_dir))
    serials = [f"PAR-{n}" for n in range(4)]

    def add(serial: str) -> subprocess.CompletedProcess[str]:
        return tms("terminal", "add", serial, "--customer", "Acme", env=env, timeout=120)

    # One opens the stopped platform's database at a time; none joins a server that
    # another is about to stop.
    with ThreadPoolExecutor(max_workers=len(serials)) as pool:
        results = list(pool.map(add, serials))
    for result in results:
        assert result.returncode == 0, result.stderr
    listed = tms("account", "list", "--all", env=env)
    assert set(serials) <= set(listed.stdout.split()), listed.stdout
    assert not _processes_using(platform.data_dir)


def test_a_daemon_refuses_a_database_another_command_opened_for_itself(
    platform: Platform,
) -> None:
    assert platform.stop() == 0
    password = json.loads((platform.data_dir / "secrets.json").read_text())["database_password"]
    held = EmbeddedPostgres(platform.data_dir / "postgres", free_port(), password)
    assert held.lock(wait_s=0, holder="command")
    held.start()
    try:
        env = clean_env(
            TMS_DATA_DIR=str(platform.data_dir),
            TMS_CONSOLE_SECRET_KEY="a-test-secret-key-of-enough-length",
        )
        console = tms("console", env=env)
        assert console.returncode == 1
        assert console.stderr.strip().splitlines() == [
            f"Error: the platform in {platform.data_dir} is not running: start it with "
            f"`tms up --data-dir {platform.data_dir}`, or set TMS_DATABASE_URL"
        ]
    finally:
        held.stop()


def test_a_platform_on_an_external_database_sends_commands_there(database_url: str) -> None:
    data_dir = make_data_dir()
    running = Platform(data_dir, extra_env={"TMS_DATABASE_URL": database_url})
    running.start()
    try:
        result = tms("--data-dir", str(data_dir), "terminal", "add", "X-1", "--customer", "Y")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"Error: the platform in {data_dir} uses the PostgreSQL server of its "
            "TMS_DATABASE_URL: set TMS_DATABASE_URL for this command too"
        ]
    finally:
        assert running.stop() == 0
        shutil.rmtree(data_dir, ignore_errors=True)
