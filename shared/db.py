"""Database URLs and engines: one place that knows how TMS reaches PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import create_engine

from shared.errors import TMSError


def _scheme_free(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return url[len(prefix) :]
    raise TMSError(f"not a PostgreSQL URL: {url.split('@')[-1]!r} (TMS supports PostgreSQL only)")


def _split_hosts(rest: str) -> tuple[str, list[str], str]:
    """``user:pw@h1:p1,h2:p2/db?q`` -> ("user:pw@", ["h1:p1", "h2:p2"], "/db?q")."""
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, _, hosts = netloc.rpartition("@")
    return (userinfo + "@" if userinfo else ""), hosts.split(","), tail


def sqlalchemy_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and pin SQLAlchemy to the psycopg 3 driver.

    A libpq list of hosts (``@h1:5432,h2:5432/tms?target_session_attrs=read-write``,
    a primary and its standby) is rewritten as SQLAlchemy's ``?host=h1:5432&host=...``:
    SQLAlchemy's URL parser reads the comma as part of a port number and fails.
    """
    rest = _scheme_free(url)
    userinfo, hosts, tail = _split_hosts(rest)
    if len(hosts) > 1:
        path, sep, query = tail.partition("?")
        extra = "&".join(f"host={host}" for host in hosts)
        rest = f"{userinfo}{path or '/'}?{extra}{'&' + query if sep and query else ''}"
    return "postgresql+psycopg://" + rest


def libpq_url(url: str) -> str:
    """The same URL in the form psycopg.connect() takes (libpq reads host lists itself)."""
    return "postgresql://" + _scheme_free(url)


def database_hosts(url: str) -> list[str]:
    """The ``host:port`` places a URL names, in the order libpq tries them."""
    _, hosts, _ = _split_hosts(_scheme_free(url))
    return [
        host if ":" in host.rsplit("]", 1)[-1] else f"{host or 'localhost'}:5432" for host in hosts
    ]


def make_engine(url: str, *, pool_size: int = 5, jit: bool = True) -> Engine:
    """An engine for ``url``. ``jit=False`` for short interactive queries: PostgreSQL
    compiles a plan it costs high (a misestimated join) with LLVM, and the compiling
    took 15 ms of a 30 ms report query at 100,000 terminals (bench/console.py)."""
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={} if jit else {"options": "-c jit=off"},
    )


# SQLSTATEs that mean "this database is not the one you think": no TMS schema yet, or
# an older one (sent by the server once connected, so they come with a code).
_SCHEMA_STATES = {"42P01": "has no TMS tables yet", "42703": "has an older TMS schema"}


def database_error_message(exc: BaseException, url: str | None) -> str | None:
    """One line that says why PostgreSQL could not be used, and what to check; or None.

    None for errors that are not about reaching the right database (a failed
    statement is a bug, and keeps its traceback). Library messages span several lines
    and name neither the setting nor the fix; this is what a ``tms`` command prints.
    """
    import psycopg  # noqa: PLC0415 (only on the error path)

    orig = getattr(exc, "orig", None) or exc
    where, user, name = "PostgreSQL", "?", "?"
    if url:
        try:
            parsed = make_url(sqlalchemy_url(url))
            where = f"PostgreSQL at {', '.join(database_hosts(url))}"
            user, name = parsed.username or "?", parsed.database or "?"
        except (ArgumentError, ValueError, TMSError):
            pass  # a malformed URL still gets a message, without its place
    check = "check TMS_DATABASE_URL ([database] url), or --data-dir / TMS_DATA_DIR"
    state = getattr(orig, "sqlstate", None)
    if state in _SCHEMA_STATES:
        return f"the database {name!r} at {where} {_SCHEMA_STATES[state]}: run `tms db upgrade`"
    if not isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
        return None
    # Errors while connecting come from libpq as text, without a SQLSTATE: read its
    # first line only (later ones may quote a statement).
    first = " ".join(str(orig).strip().splitlines()[0].split()) if str(orig).strip() else ""
    lowered = first.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return f"{where} refused the password of user {user!r}: {check}"
    if f'database "{name.lower()}" does not exist' in lowered:
        return f"{where} has no database {name!r}: create it or {check}"
    if f'role "{user.lower()}" does not exist' in lowered:
        return f"{where} has no user {user!r}: {check}"
    unreachable = (
        "connection refused",
        "could not connect",
        "timeout expired",
        "timed out",
        "no route to host",
        "could not translate host name",
    )
    if any(words in lowered for words in unreachable):
        return f"cannot reach {where} (is it running?): {check}, or start the platform (`tms up`)"
    return f"{where}: {first[:300]}; {check}"
