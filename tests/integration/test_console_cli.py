"""``tms user`` and ``tms console`` as an operator runs them, against real PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from click.testing import CliRunner
from sqlmodel import Session, col, select

from console import users
from shared.db import make_engine
from shared.models import AuditEvent
from shared.ports import free_port
from tests.waiting import wait_until
from tms.cli import main

pytestmark = pytest.mark.integration


def run(database_url: str, *args: str, stdin: str | None = None, **env: str):
    runner = CliRunner()
    return runner.invoke(
        main, list(args), input=stdin, env={"TMS_DATABASE_URL": database_url, **env}
    )


def audit_actions(database_url: str) -> list[str]:
    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine) as session:
            rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
            return [row.action for row in rows]
    finally:
        engine.dispose()


def test_user_add_prints_a_generated_password_that_works(database_url: str) -> None:
    result = run(database_url, "user", "add", "Olga", "--role", "operator")
    assert result.exit_code == 0, result.output
    password = result.output.split("password: ")[1].split()[0]
    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine) as session:
            account = users.authenticate(session, "olga", password)
            assert account is not None and account.role == "operator"
    finally:
        engine.dispose()
    assert audit_actions(database_url) == ["user.created"]


def test_user_add_reads_password_from_stdin_and_refuses_duplicates(database_url: str) -> None:
    result = run(
        database_url,
        "user",
        "add",
        "sam",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="a long enough secret\n",
    )
    assert result.exit_code == 0 and "password:" not in result.output
    again = run(database_url, "user", "add", "SAM", "--role", "viewer")
    assert again.exit_code == 1 and "user 'sam' already exists" in again.output
    short = run(
        database_url, "user", "add", "tim", "--role", "viewer", "--password-stdin", stdin="x\n"
    )
    assert short.exit_code == 1 and "at least 10 characters" in short.output


def test_user_token_prints_a_token_the_api_accepts(database_url: str) -> None:
    assert run(database_url, "user", "add", "bot", "--role", "support").exit_code == 0
    result = run(database_url, "user", "token", "bot", "--name", "nightly")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine) as session:
            account = users.user_for_token(session, token)
            assert account is not None and account.username == "bot"
    finally:
        engine.dispose()
    missing = run(database_url, "user", "token", "ghost", "--name", "x")
    assert missing.exit_code == 1 and "no console user 'ghost'" in missing.output
    revoke = run(database_url, "user", "revoke-token", "bot", "--name", "nightly")
    assert revoke.exit_code == 0
    assert audit_actions(database_url)[-2:] == ["api_token.created", "api_token.revoked"]


def test_initial_admin_only_on_an_empty_user_table(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        password = users.ensure_initial_admin(engine)
        assert password is not None
        assert users.ensure_initial_admin(engine) is None
        with Session(engine) as session:
            admin = users.authenticate(session, "admin", password)
            assert admin is not None and admin.role == "admin"
    finally:
        engine.dispose()


def test_console_without_secret_key_says_what_to_set(database_url: str) -> None:
    result = run(database_url, "console", TMS_CONSOLE_PORT=str(free_port()))
    assert result.exit_code == 1
    assert "set TMS_CONSOLE_SECRET_KEY" in result.output


def test_console_names_a_busy_port(database_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(
            database_url,
            "console",
            TMS_CONSOLE_PORT=str(port),
            TMS_CONSOLE_SECRET_KEY="test-secret-key-0123456789",
        )
    assert result.exit_code == 1
    assert f"127.0.0.1:{port} is already in use" in result.output
    assert "TMS_CONSOLE_PORT" in result.output


def test_console_serves_and_stops_on_sigterm(database_url: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TMS_DATABASE_URL": database_url,
        "TMS_CONSOLE_PORT": str(port),
        "TMS_CONSOLE_SECRET_KEY": "test-secret-key-0123456789",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tms", "console"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    return r.status == 200
            except OSError:
                assert process.poll() is None, process.communicate()[0].decode()
                return False

        wait_until(healthy, "the console to answer /healthz", timeout=60)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
        assert process.returncode == 0, output
        assert "console stopped" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
