"""What a `tms` command says about a database it cannot use: one line, the right advice,
and nothing at all (a traceback) for errors that are bugs rather than set-up."""

from __future__ import annotations

from pathlib import Path

import psycopg
import psycopg.errors
import pytest

from shared.db import database_error_message
from shared.settings import load_settings

URL = "postgresql://tms:secret@db.example.net:6543/tms"


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (
            psycopg.OperationalError(
                'connection failed: connection to server at "10.0.0.5", port 6543 failed: '
                "Connection refused\n\tIs the server running on that host?"
            ),
            "cannot reach PostgreSQL at db.example.net:6543 (is it running?)",
        ),
        (
            psycopg.OperationalError(
                'connection failed: connection to server at "10.0.0.5", port 6543 failed: '
                'FATAL:  password authentication failed for user "tms"'
            ),
            "PostgreSQL at db.example.net:6543 refused the password of user 'tms'",
        ),
        (
            psycopg.OperationalError('connection failed: FATAL:  database "tms" does not exist'),
            "PostgreSQL at db.example.net:6543 has no database 'tms'",
        ),
        (
            psycopg.OperationalError('connection failed: FATAL:  role "tms" does not exist'),
            "PostgreSQL at db.example.net:6543 has no user 'tms'",
        ),
        (
            psycopg.errors.UndefinedTable(
                'relation "user_account" does not exist\nLINE 1: SELECT user_account.role'
            ),
            "the database 'tms' at PostgreSQL at db.example.net:6543 has no TMS tables yet: "
            "run `tms db upgrade`",
        ),
        (
            psycopg.errors.UndefinedColumn("column user_account.role does not exist"),
            "has an older TMS schema: run `tms db upgrade`",
        ),
    ],
)
def test_set_up_errors_are_one_line_with_what_to_check(error: Exception, says: str) -> None:
    message = database_error_message(error, URL)
    assert message is not None
    assert says in message
    assert "\n" not in message
    assert "secret" not in message  # the password never appears


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.SyntaxError('syntax error at or near "SELEC"'),
        psycopg.errors.UniqueViolation('duplicate key value violates "terminal_serial_key"'),
        psycopg.errors.InsufficientPrivilege("permission denied for table terminal"),
    ],
)
def test_statement_errors_are_bugs_and_keep_their_traceback(error: Exception) -> None:
    assert database_error_message(error, URL) is None


def test_a_relative_data_directory_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={"TMS_DATA_DIR": "platform/data"})
    assert settings.paths.data_dir == tmp_path / "platform" / "data"
