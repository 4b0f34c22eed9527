"""The embedded PostgreSQL cluster that ``tms up`` runs when no database URL is set.

Debian's PostgreSQL binaries are used rather than the pgserver wheel: they are already
the production server's package (security updates through apt), and they need no
extra system user when started as root, because Debian's package already created
``postgres``. initdb refuses to run as root, so as root every server process runs as
that user, and the cluster lives in a directory it owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shared.errors import TMSError

SUPERUSER = "tms"
DATABASE = "tms"
UNPRIVILEGED_USER = "postgres"


class PostgresError(TMSError):
    pass


def find_bin_dir() -> Path:
    """Newest Debian PostgreSQL (/usr/lib/postgresql/N/bin), else whatever is on PATH."""
    override = os.environ.get("TMS_PG_BIN")
    if override:
        return Path(override)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresError(
        "PostgreSQL server binaries not found: install Debian's 'postgresql' package "
        "(apt-get install postgresql) or set TMS_PG_BIN to the directory holding initdb"
    )


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise PostgresError(
            f"running as root, PostgreSQL must run as an unprivileged user, but user "
            f"{UNPRIVILEGED_USER!r} does not exist: install Debian's 'postgresql' package"
        ) from None


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Every ancestor must let the server's user pass, or initdb fails obscurely."""
    for parent in path.resolve().parents:
        mode = parent.stat()
        if mode.st_uid == user.pw_uid:
            continue
        if not mode.st_mode & stat.S_IXOTH:
            raise PostgresError(
                f"user {user.pw_name!r} cannot reach {path} because {parent} is not "
                f"searchable by others; choose a data directory outside it with --data-dir"
            )


@dataclass
class EmbeddedPostgres:
    """A private cluster under ``<root>/`` listening on 127.0.0.1:``port`` only."""

    root: Path
    port: int
    password: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        user = _run_as()
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            [str(find_bin_dir() / args[0]), *args[1:]],
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            capture_output=True,
            text=True,
            cwd="/",
            **kwargs,
        )

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def initialize(self) -> None:
        user = _run_as()
        self.root.mkdir(parents=True, exist_ok=True)
        if user:
            _check_reachable(self.root, user)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o700)
        with tempfile.NamedTemporaryFile("w", dir=self.root, delete=False) as pwfile:
            pwfile.write(self.password + "\n")
        if user:
            os.chown(pwfile.name, user.pw_uid, user.pw_gid)
        try:
            result = self._run(
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--pwfile",
                    pwfile.name,
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ]
            )
        finally:
            os.unlink(pwfile.name)
        if result.returncode != 0:
            raise PostgresError(f"initdb failed:\n{result.stderr.strip()}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            # Tuned for a single host holding ingest's batched writes.
            conf.write(
                "\n# written by tms\nlisten_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\nmax_connections = 200\n"
                "shared_buffers = 256MB\nwal_compression = on\nmax_wal_size = 2GB\n"
                "synchronous_commit = on\nlogging_collector = off\n"
            )

    def is_running(self) -> bool:
        return self._run(["pg_ctl", "status", "-D", str(self.data_dir)]).returncode == 0

    def start(self) -> None:
        if not self.is_initialized():
            self.initialize()
            created = True
        else:
            created = False
        if self.is_running():
            return
        result = self._run(
            [
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {self.port}",
            ]
        )
        if result.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise PostgresError(f"PostgreSQL did not start:\n{result.stderr.strip()}\n{tail}")
        if created:
            self._create_database()

    def _create_database(self) -> None:
        env = {**os.environ, "PGPASSWORD": self.password}
        result = self._run(
            ["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, DATABASE],
            env=env,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise PostgresError(f"createdb failed: {result.stderr.strip()}")

    def stop(self) -> None:
        if self.is_initialized() and self.is_running():
            self._run(["pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data_dir)])
