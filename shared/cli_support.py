"""What every ``tms`` subcommand needs from the root command, below the components.

``tms/cli.py`` is the root: it reads the settings and puts a ``CliRoot`` on the click
context; each component's ``cli.py`` (agent, broker, ingest, console, commands) reads
it through the functions here, so no component imports ``tms/`` (which imports them).
How a data directory's embedded database is found stays in ``tms/``: the root hands
it down as ``CliRoot.find_database``. Also the one way a long-running command stops
on SIGTERM or Ctrl-C (``stop_on_signals``, ``run_until_signalled``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import click
from sqlmodel import Session

from shared.db import make_engine
from shared.settings import Settings

T = TypeVar("T")

URL_KEY = "tms.database_url"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# (click context, open_stopped) -> the database URL of the platform in the data dir.
FindDatabase = Callable[[click.Context, bool], str]


@dataclass(frozen=True)
class CliRoot:
    """What the root command gives its subcommands."""

    settings: Settings
    find_database: FindDatabase


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("TMS_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _root(ctx: click.Context) -> CliRoot:
    root = ctx.find_root().obj
    assert isinstance(root, CliRoot), "run through the tms command (tms.cli:main)"
    return root


def settings_of(ctx: click.Context) -> Settings:
    return _root(ctx).settings


def replace_settings(ctx: click.Context, settings: Settings) -> None:
    """For a subcommand option that changes where the platform is (e.g. --data-dir)."""
    ctx.find_root().obj = replace(_root(ctx), settings=settings)


def remember_database_url(ctx: click.Context, url: str) -> None:
    """Name ``url``'s server in the one-line message of a database error."""
    ctx.find_root().meta[URL_KEY] = url


def database_url_of(ctx: click.Context, *, open_stopped: bool = True) -> str:
    """The database URL: the configured one, else that of the platform in the data dir.

    With ``open_stopped`` (one-shot commands) a stopped platform's database is started
    for the duration of the command; daemons pass False and get an error instead.
    """
    root = ctx.find_root()
    if URL_KEY in root.meta:
        return str(root.meta[URL_KEY])
    settings = settings_of(ctx)
    if settings.database.url is not None:
        url = settings.database.url.get_secret_value()
    else:
        url = _root(ctx).find_database(ctx, open_stopped)
    root.meta[URL_KEY] = url
    return url


def in_session(ctx: click.Context, work: Callable[[Session], T]) -> T:
    """Run ``work`` in one transaction against the command's database and commit it."""
    engine = make_engine(database_url_of(ctx), pool_size=1)
    try:
        with Session(engine) as session:
            result = work(session)
            session.commit()
            return result
    finally:
        engine.dispose()


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a command whose main loop is a thread's."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    return stop


@asynccontextmanager
async def signals_set(stop: asyncio.Event) -> AsyncIterator[asyncio.Event]:
    """While inside, SIGTERM and SIGINT set ``stop`` (on the running event loop)."""
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main(stop)`` in a fresh event loop; SIGTERM and SIGINT set ``stop``."""

    async def runner() -> T:
        async with signals_set(asyncio.Event()) as stop:
            return await main(stop)

    return asyncio.run(runner())
