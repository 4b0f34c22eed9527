"""Database URLs: one form in the settings, the right form for SQLAlchemy and for libpq,
including a list of hosts (a primary and its standby) that libpq tries in order."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url

from shared.db import database_error_message, database_hosts, libpq_url, sqlalchemy_url
from shared.errors import TMSError

pytestmark = pytest.mark.unit

PAIR = "postgresql://tms:s3cret@10.0.0.1:5432,10.0.0.2:5433/tms?target_session_attrs=read-write"


def _connect_args(url: str) -> dict[str, object]:
    _, kwargs = PGDialect_psycopg().create_connect_args(make_url(sqlalchemy_url(url)))
    return kwargs


def test_one_host_keeps_its_url_with_the_driver_pinned() -> None:
    url = "postgresql://tms:pw@db:6543/tms?sslmode=require"
    assert sqlalchemy_url(url) == "postgresql+psycopg://tms:pw@db:6543/tms?sslmode=require"
    assert libpq_url("postgresql+psycopg://tms:pw@db:6543/tms") == "postgresql://tms:pw@db:6543/tms"


def test_a_host_list_reaches_psycopg_as_libpq_lists() -> None:
    kwargs = _connect_args(PAIR)
    assert kwargs["host"] == "10.0.0.1,10.0.0.2"
    assert kwargs["port"] == "5432,5433"
    assert kwargs["target_session_attrs"] == "read-write"
    assert (kwargs["user"], kwargs["password"], kwargs["dbname"]) == ("tms", "s3cret", "tms")


def test_a_host_list_without_a_query_or_a_database_still_parses() -> None:
    kwargs = _connect_args("postgresql://tms:pw@a:1,b:2")
    assert (kwargs["host"], kwargs["port"]) == ("a,b", "1,2")
    kwargs = _connect_args("postgresql://tms:pw@a:1,b:2/tms")
    assert kwargs["dbname"] == "tms"


def test_libpq_gets_the_host_list_as_written() -> None:
    assert libpq_url(PAIR) == PAIR
    # libpq itself accepts it: parsing needs no server.
    info = psycopg.conninfo.conninfo_to_dict(libpq_url(PAIR))
    assert info["host"] == "10.0.0.1,10.0.0.2" and info["port"] == "5432,5433"


def test_hosts_are_listed_with_their_ports() -> None:
    assert database_hosts(PAIR) == ["10.0.0.1:5432", "10.0.0.2:5433"]
    assert database_hosts("postgresql://u:p@db/tms") == ["db:5432"]
    assert database_hosts("postgresql://u:p@[::1]:7/tms") == ["[::1]:7"]


def test_an_error_names_every_host_of_the_list() -> None:
    error = psycopg.OperationalError("connection failed: Connection refused")
    said = database_error_message(error, PAIR)
    assert said is not None
    assert said.startswith("cannot reach PostgreSQL at 10.0.0.1:5432, 10.0.0.2:5433")
    assert "s3cret" not in said


def test_a_password_with_a_comma_is_not_a_host_list() -> None:
    url = "postgresql://tms:a%2Cb@db:5432/tms"
    assert database_hosts(url) == ["db:5432"]
    assert _connect_args(url)["password"] == "a,b"


def test_other_databases_are_refused() -> None:
    with pytest.raises(TMSError, match="PostgreSQL only"):
        sqlalchemy_url("mysql://u:p@h/db")
    with pytest.raises(TMSError, match="PostgreSQL only"):
        libpq_url("sqlite:///x.db")
