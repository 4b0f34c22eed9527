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
from tms.ports import free_port
from tms.postgres import EmbeddedPostgres, running_port

# How long a command waits for a starting `tms up` to make its server ready.
READY_WAIT_S = 30.0


class PlatformNotFound(TMSError):
    pass


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


def _wait_for_port(postgres: EmbeddedPostgres) -> int | None:
    """The running server's port; waits while a `tms up` holding the lock starts it."""
    deadline = time.monotonic() + READY_WAIT_S
    while (port := running_port(postgres.data_dir)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return port


@contextmanager
def platform_database(
    data_dir: Path, *, open_stopped: bool, say: Callable[[str], None]
) -> Iterator[str]:
    """The URL of ``data_dir``'s database, for the duration of the ``with`` block.

    With ``open_stopped`` false (daemons, which would otherwise keep the cluster up
    for as long as they run), a stopped platform is an error.
    """
    data_dir = data_dir.resolve()
    postgres = EmbeddedPostgres(data_dir / "postgres", 0, _password(data_dir))
    if not postgres.is_initialized():
        raise PlatformNotFound(
            f"no TMS database in {data_dir}: start the platform once with "
            f"`tms up --data-dir {data_dir}`, or set TMS_DATABASE_URL"
        )
    if not postgres.lock(wait_s=0):
        # `tms up` (or another command) owns the server: use it while it runs.
        port = _wait_for_port(postgres)
        if port is None:
            raise PlatformNotFound(
                f"the platform in {data_dir} is starting or stopping; try again in a moment"
            )
        postgres.port = port
        yield postgres.url
        return
    try:
        port = running_port(postgres.data_dir)
        if port is not None:
            # Left running by a supervisor that did not stop it: use it as it is.
            postgres.port = port
            yield postgres.url
            return
        if not open_stopped:
            raise PlatformNotFound(
                f"the platform in {data_dir} is not running: start it with "
                f"`tms up --data-dir {data_dir}`, or set TMS_DATABASE_URL"
            )
        postgres.port = free_port()
        say(
            f"tms: the platform in {data_dir} is not running; its database is opened for "
            "this command only"
        )
        postgres.start()
        yield postgres.url
    finally:
        postgres.stop()
