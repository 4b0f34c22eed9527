"""PostgreSQL's client programs (pg_dump, pg_restore) for a given server, and how they
are given a database URL without showing its password to ``ps``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.db import libpq_url
from tms.backup_rules import BackupError, choose_client, client_major

# Debian's layout, as tms/postgres.py finds the server: /usr/lib/postgresql/<major>/bin.
DEBIAN_ROOT = Path("/usr/lib/postgresql")


def _installed(tool: str) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in DEBIAN_ROOT.glob(f"*/bin/{tool}"):
        major = path.parent.parent.name
        if major.isdigit():
            found[int(major)] = path
    if not found and (on_path := shutil.which(tool)) is not None:
        # Not Debian: the one on PATH, for what its --version says it is.
        result = subprocess.run([on_path, "--version"], capture_output=True, text=True)
        major_found = client_major(result.stdout)
        if major_found is not None:
            found[major_found] = Path(on_path)
    return found


def find_client(tool: str, server_major: int) -> Path:
    """``tool`` fit for a server of ``server_major`` (TMS_PG_BIN wins, as for the server)."""
    override = os.environ.get("TMS_PG_BIN")
    if override and (Path(override) / tool).exists():
        return Path(override) / tool
    chosen = choose_client(server_major, _installed(tool))
    if chosen is None:
        raise BackupError(
            f"{tool} for PostgreSQL {server_major} not found: install Debian's "
            f"postgresql-client-{server_major} (apt-get install postgresql-client-"
            f"{server_major}) or set TMS_PG_BIN to the directory holding {tool}"
        )
    return chosen


def newest_client(tool: str) -> Path:
    """The newest ``tool`` installed: to read a dump before any server is known."""
    override = os.environ.get("TMS_PG_BIN")
    if override and (Path(override) / tool).exists():
        return Path(override) / tool
    installed = _installed(tool)
    if not installed:
        raise BackupError(
            f"{tool} not found: install Debian's postgresql-client package or set "
            f"TMS_PG_BIN to the directory holding {tool}"
        )
    return installed[max(installed)]


def server_major(conn: psycopg.Connection[Any]) -> int:
    return conn.info.server_version // 10000


def client_args(url: str) -> tuple[str, dict[str, str]]:
    """The ``--dbname`` value and the environment for a client program: the password
    goes in PGPASSWORD, since a command line is readable by every user of the host."""
    params = conninfo_to_dict(libpq_url(url))
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None}), env


def first_error(stderr: str) -> str:
    """The line of a client's stderr that says what went wrong, for a one-line message."""
    lines = [" ".join(line.split()) for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line or "FATAL" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no message"
