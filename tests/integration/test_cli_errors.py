"""Every `tms` command meets a missing database, a wrong password and a stopped broker with
one line that says what to check, never a traceback."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.ports import free_port
from tests.integration.platform import clean_env, make_data_dir, tms
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

# Every command that reaches the database, with arguments that would otherwise work.
DATABASE_COMMANDS: list[list[str]] = [
    ["db", "upgrade"],
    ["db", "current"],
    ["db", "retention"],
    ["broker", "mosquitto-config", "--out", "{tmp}/mosquitto"],
    ["terminal", "add", "T-1", "--customer", "Acme"],
    ["terminal", "import", "{tmp}/terminals.csv"],
    ["terminal", "rotate", "T-1"],
    ["terminal", "revoke", "T-1"],
    ["terminal", "decommission", "T-1"],
    ["terminal", "swap", "T-1", "T-2"],
    ["account", "add", "script-1", "--role", "support-script"],
    ["account", "list"],
    ["account", "rotate", "script-1"],
    ["account", "revoke", "script-1"],
    ["user", "add", "ann", "--role", "viewer"],
    ["user", "token", "admin", "--name", "nightly"],
    ["user", "revoke-token", "admin", "--name", "nightly"],
    ["firmware", "add", "{tmp}/tc200-2.5.0.img", "--version", "2.5.0"],
    ["firmware", "list"],
    ["firmware", "release", "2.5.0"],
    ["firmware", "deprecate", "2.5.0"],
    ["rollouts", "list"],
    ["db", "backup", "--dir", "{tmp}/backups"],
    ["rollouts", "create", "2.5.0", "--name", "pilot"],
    ["rollouts", "pause", "1"],
    # The daemons check their database before they serve.
    ["broker", "--data-dir", "{tmp}/broker-data", "--port", "{port}"],
    ["ingest"],
    ["console"],
    ["commands"],
    ["rollouts", "run"],
    ["up", "--data-dir", "{tmp}/up-data", "--broker-port", "{port}", "--console-port", "{port2}"],
]

Results = list[tuple[str, subprocess.CompletedProcess[str]]]


def _with_url(url: str, *, password: str | None = None, database: str | None = None) -> str:
    head, name = url.rsplit("/", 1)
    if password is not None:
        scheme, rest = head.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        head = f"{scheme}://{credentials.split(':', 1)[0]}:{password}@{host}"
    return f"{head}/{database or name}"


def _run_all(work_dir: Path, url: str) -> Results:
    (work_dir / "terminals.csv").write_text("serial,customer,store\nT-9,Acme,S1\n")
    (work_dir / "tc200-2.5.0.img").write_bytes(b"TC200FW:2.5.0\n" + bytes(4096))
    env = clean_env(
        TMS_DATABASE_URL=url,
        TMS_INGEST_MQTT_USERNAME="tms-ingest",
        TMS_INGEST_MQTT_PASSWORD="not-used-before-the-database",
        TMS_INGEST_METRICS_PORT="0",
        TMS_CONSOLE_SECRET_KEY="a-test-secret-key-of-enough-length",
        TMS_CONSOLE_PORT=str(free_port()),
        TMS_CONSOLE_MQTT_USERNAME="tms-console",
        TMS_CONSOLE_MQTT_PASSWORD="not-used-before-the-database",
    )

    def run(command: list[str]) -> tuple[str, subprocess.CompletedProcess[str]]:
        values = {"tmp": str(work_dir), "port": str(free_port()), "port2": str(free_port())}
        args = [part.format(**values) for part in command]
        return " ".join(command), tms(*args, env=env, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(run, DATABASE_COMMANDS))


def _assert_one_line(results: Results, says: str) -> None:
    for command, result in results:
        output = result.stdout + result.stderr
        assert result.returncode == 1, f"tms {command}: exit {result.returncode}\n{output}"
        assert "Traceback" not in output, f"tms {command}:\n{output}"
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, f"tms {command}:\n{output}"
        assert says in errors[0], f"tms {command}: {errors[0]}"
        # Nothing but the error and, for the broker, its note about missing TLS.
        others = [line for line in output.splitlines() if line not in errors]
        assert all("No certificates" in line for line in others), f"tms {command}:\n{output}"


@pytest.fixture
def work_dir() -> Iterator[Path]:
    # World-searchable: Mosquitto and PostgreSQL run as their own users.
    path = make_data_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_every_command_with_no_database_server_says_so(work_dir: Path) -> None:
    url = f"postgresql://tms:secret@127.0.0.1:{free_port()}/tms"
    _assert_one_line(_run_all(work_dir, url), "cannot reach PostgreSQL at 127.0.0.1")


def test_every_command_with_a_wrong_password_says_so(work_dir: Path, database_url: str) -> None:
    url = _with_url(database_url, password="wrong-password")
    _assert_one_line(_run_all(work_dir, url), "refused the password of user 'tms'")


def test_every_command_with_a_missing_database_says_so(work_dir: Path, database_url: str) -> None:
    url = _with_url(database_url, database="no_such_database")
    _assert_one_line(_run_all(work_dir, url), "has no database 'no_such_database'")


def _daemon(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tms", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("daemon", ["ingest", "agent", "console", "commands"])
def test_daemons_ride_out_a_stopped_broker_and_say_where_they_retry(
    daemon: str, database_url: str, tmp_path: Path
) -> None:
    nowhere = free_port()  # nothing listens there
    env = clean_env(TMS_DATABASE_URL=database_url, TMS_DATA_DIR=str(tmp_path))
    if daemon == "ingest":
        env.update(
            TMS_INGEST_MQTT_PORT=str(nowhere),
            TMS_INGEST_MQTT_USERNAME="tms-ingest",
            TMS_INGEST_MQTT_PASSWORD="secret",
            TMS_INGEST_METRICS_PORT="0",
        )
        # The retry itself, not the start-up line that also names the broker: a SIGTERM
        # before the daemon installs its handlers would end it with the default action.
        expected = f"MQTT broker 127.0.0.1:{nowhere}: [Errno 111] Connection refused; retrying"
        args = ["ingest"]
    elif daemon == "agent":
        env.update(
            TMS_AGENT_SERIAL="T-1",
            TMS_AGENT_MQTT_PORT=str(nowhere),
            TMS_AGENT_MQTT_PASSWORD="secret",
            TMS_AGENT_HEARTBEAT_INTERVAL_S="0.2",
        )
        expected = f"no connection to the broker at 127.0.0.1:{nowhere}"
        args = ["agent", "--simulated-device"]
    elif daemon == "commands":
        env.update(
            TMS_CONSOLE_MQTT_PORT=str(nowhere),
            TMS_CONSOLE_MQTT_USERNAME="tms-console",
            TMS_CONSOLE_MQTT_PASSWORD="secret",
        )
        expected = f"no connection to the broker at 127.0.0.1:{nowhere} (attempt 1); retrying"
        args = ["commands"]
    else:
        console_port = free_port()
        env.update(
            TMS_CONSOLE_MQTT_PORT=str(nowhere),
            TMS_CONSOLE_SECRET_KEY="a-test-secret-key-of-enough-length",
            TMS_CONSOLE_PORT=str(console_port),
        )
        expected = f"listening on http://127.0.0.1:{console_port}"
        args = ["console"]
    process = _daemon(args, env)
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)  # until the process closes its output

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    def said_it() -> bool:
        assert process.poll() is None, f"tms {daemon} exited:\n{''.join(lines)}"
        return any(expected in line for line in list(lines))

    try:
        wait_until(said_it, lambda: f"tms {daemon} to name {expected}:\n{''.join(lines)}", 60)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        reader.join(30)
    output = "".join(lines)
    assert "Traceback" not in output, output
    assert code == 0, output
