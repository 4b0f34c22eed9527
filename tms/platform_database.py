"""How a ``tms`` command finds the database of the platform in a data directory.

``tms up`` keeps its PostgreSQL cluster and the cluster's password in the data
directory, so a command run in a second shell needs nothing but that directory
(``--data-dir``, ``TMS_DATA_DIR`` or the same default as ``tms up``). While the
platform runs, the command connects to its server; while it is stopped, the command
starts the cluster for itself on a free loopback port and stops it when it is done,
so nothing is left running that was not running before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import TMSError
from shared.ports import free_port, port_accepts
from tms.postgres import EmbeddedPostgres, read_postmaster

# How long a command waits for a starting `tms up`, or for another command that has
# the stopped platform's database open for itself.
WAIT_S = 30.0

# The roles written in the lock file (tms/postgres.py): a `tms up` still migrating,
# a `tms up` whose database is ready, a command that opened a stopped platform, and
# a `tms up` that stopped cleanly (any other role left behind means it was killed).
HOLDER_UP_STARTING = "up-starting"
HOLDER_UP = "up"
HOLDER_COMMAND = "command"
HOLDER_STOPPED = "stopped"
PLATFORM_FILE = "platform.json"


class PlatformNotFound(TMSError):
    pass


def record_database_kind(data_dir: Path, external: bool) -> None:
    """Written by `tms up`: whether its database is the embedded cluster or TMS_DATABASE_URL."""
    kind = "external" if external else "embedded"
    (data_dir / PLATFORM_FILE).write_text(json.dumps({"database": kind}) + "\n")


def _refuse_external(data_dir: Path) -> None:
    try:
        recorded = json.loads((data_dir / PLATFORM_FILE).read_text())
    except (OSError, ValueError):
        return  # written by every `tms up` since; an older one ran embedded only
    if isinstance(recorded, dict) and recorded.get("database") == "external":
        raise PlatformNotFound(
            f"the platform in {data_dir} uses the PostgreSQL server of its TMS_DATABASE_URL: "
            "set TMS_DATABASE_URL for this command too"
        )


def _password(data_dir: Path) -> str:
    path = data_dir / "secrets.json"
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlatformNotFound(
            f"no TMS platform in {data_dir} ({path.name} is missing): start one with "
            f"`tms up --data-dir {data_dir}`, or set TMS_DATABASE_URL"
        ) from None
    except PermissionError:
        raise PlatformNotFound(
            f"cannot read {path}: permission denied; run this command as the user that "
            "runs `tms up` (root for /var/lib/tms)"
        ) from None
    except (OSError, ValueError) as exc:
        raise PlatformNotFound(f"cannot read {path}: {exc}") from None
    password = stored.get("database_password") if isinstance(stored, dict) else None
    if not isinstance(password, str):
        raise PlatformNotFound(f"{path} holds no database password: was it edited by hand?")
    return password


def _serving_port(postgres: EmbeddedPostgres) -> int | None:
    """The port of a ready server on the cluster that accepts connections, else None.

    postmaster.pid alone is not enough: after a crash it may name a pid since reused.
    """
    state = read_postmaster(postgres.data_dir)
    if state is None or state.status != "ready" or not port_accepts("127.0.0.1", state.port):
        return None
    return state.port


@contextmanager
def platform_database(
    data_dir: Path, *, open_stopped: bool, say: Callable[[str], None]
) -> Iterator[str]:
    """The URL of ``data_dir``'s database, for the duration of the ``with`` block.

    With ``open_stopped`` false (daemons, which would otherwise keep the cluster up
    for as long as they run), a stopped platform is an error.
    """
    data_dir = data_dir.resolve()
    _refuse_external(data_dir)
    postgres = EmbeddedPostgres(data_dir / "postgres", 0, _password(data_dir))
    if not postgres.is_initialized():
        raise PlatformNotFound(
            f"no TMS database in {data_dir}: start the platform once with "
            f"`tms up --data-dir {data_dir}`, or set TMS_DATABASE_URL"
        )
    not_running = PlatformNotFound(
        f"the platform in {data_dir} is not running: start it with "
        f"`tms up --data-dir {data_dir}`, or set TMS_DATABASE_URL"
    )
    deadline = time.monotonic() + WAIT_S
    while not postgres.lock(wait_s=0, holder=HOLDER_COMMAND):
        holder = postgres.lock_holder()
        role = holder[1] if holder else ""
        if role == HOLDER_UP and (port := _serving_port(postgres)) is not None:
            postgres.port = port  # the running platform's own server
            yield postgres.url
            return
        if role == HOLDER_COMMAND and not open_stopped:
            raise not_running  # another command's server stops when that command ends
        if time.monotonic() >= deadline:
            who = f"{role} (pid {holder[0]})" if holder else "another process"
            raise PlatformNotFound(
                f"the database of the platform in {data_dir} is held by {who} and did not "
                f"become available in {WAIT_S:.0f} s; try again in a moment"
            )
        time.sleep(0.1)  # `tms up` starting, or another command using the stopped one
    try:
        if not open_stopped:
            raise not_running
        port = _serving_port(postgres)
        if port is not None:
            # Left running by a supervisor that did not stop it: use it as it is.
            postgres.port = port
        else:
            postgres.port = free_port()
            say(
                f"tms: the platform in {data_dir} is not running; its database is opened "
                "for this command only"
            )
            postgres.start()
        yield postgres.url
    finally:
        postgres.stop()
