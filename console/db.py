"""The database extension: one engine per app, one session per request (flaskr's get_db).

Views fetch the request's session with ``request_session()`` and hand it to the
repository modules (``console.users``, ``console.fleet``, ``console.alert_repository``,
``console.dead_letter_repository``, and ``commands.queue`` and ``registry.lifecycle``
beyond the console); they never query it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from console import stored_values
from console.errors import ConsoleError
from shared.db import database_error_message, make_engine

EXTENSION = "tms_database"


class Database:
    """Holds the engine on ``app.extensions`` and closes request sessions on teardown."""

    def init_app(self, app: Flask, engine: Engine) -> None:
        app.extensions[EXTENSION] = engine
        # Every connection reads what the columns allow but Python cannot hold (a
        # year-1-BC heartbeat, a 3,000-level JSON result) without raising.
        event.listen(engine, "connect", _read_stored_values)
        app.teardown_appcontext(_close_session)


def _read_stored_values(connection: Any, _record: Any) -> None:
    stored_values.register(getattr(connection, "driver_connection", connection))


def engine_of(app: Flask) -> Engine:
    engine = app.extensions[EXTENSION]
    assert isinstance(engine, Engine)
    return engine


def request_session() -> Session:
    """The session of the current request, opened on first use."""
    if "db_session" not in g:
        # expire_on_commit=False: repository results stay readable after they commit.
        g.db_session = Session(engine_of(current_app), expire_on_commit=False)
    session = g.db_session
    assert isinstance(session, Session)
    return session


def _close_session(_error: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


database = Database()


@contextmanager
def open_session(database_url: str) -> Iterator[Session]:
    """A session outside any request (the ``tms user`` commands); errors made readable."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    except OperationalError as exc:
        message = database_error_message(exc, database_url)
        if message is None:
            raise
        raise ConsoleError(message) from exc
    finally:
        engine.dispose()
