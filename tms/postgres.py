"""The embedded PostgreSQL cluster that ``tms up`` runs when no database URL is set.

Debian's PostgreSQL binaries are used rather than the pgserver wheel: they are already
the production server's package (security updates through apt), and they need no
extra system user when started as root, because Debian's package already created
``postgres``. initdb refuses to run as root, so as root every server process runs as
that user, and the cluster lives in a directory it owns.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from shared.errors import TMSError
from shared.lifetime import preexec_die_with_parent

SUPERUSER = "tms"
DATABASE = "tms"
UNPRIVILEGED_USER = "postgres"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
# The word PostgreSQL writes on line 8 of postmaster.pid once it accepts connections;
# pg_ctl -w waits for the same word.
_READY = "ready"


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
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # True while this object runs the server (started it and has not stopped it).
    owned: bool = field(default=False, repr=False)
    _lock: IO[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def lock_file(self) -> Path:
        # Beside the cluster, not in it: the cluster's directory belongs to postgres.
        return self.root.parent / "postgres.lock"

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

    def lock(self, wait_s: float, holder: str) -> bool:
        """Take the cluster's lock: whoever holds it runs the server and stops it.

        ``tms up`` holds it while it runs; a ``tms`` command that opens a stopped
        platform's database holds it for as long as the command runs. ``holder`` (its
        role, ``up`` or ``command``) is written in the file with our pid, for others to
        read with ``lock_holder``. The kernel drops the lock when we die, however.
        """
        if self._lock is not None:
            return True
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        handle = self.lock_file.open("a+b")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    return False
                time.sleep(0.1)
                continue
            except OSError as exc:
                handle.close()
                raise PostgresError(f"cannot lock {self.lock_file}: {exc.strerror}") from exc
            self._lock = handle
            self.set_holder(holder)
            return True

    def set_holder(self, holder: str) -> None:
        """Say what we are doing now, e.g. ``up`` once the database is ready for others."""
        assert self._lock is not None, "lock() first"
        self._lock.truncate(0)
        self._lock.write(f"{os.getpid()} {holder}\n".encode())
        self._lock.flush()

    def lock_holder(self) -> tuple[int, str] | None:
        """(pid, role) of the lock's holder as it wrote them, or None if unknown."""
        try:
            fields = self.lock_file.read_text().split()
        except OSError:
            return None
        if len(fields) != 2 or not fields[0].isdigit():
            return None
        return int(fields[0]), fields[1]

    def holds_lock(self) -> bool:
        return self._lock is not None

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def start(self) -> None:
        """Start the server as a child that stops when this process dies.

        Run by ``pg_ctl`` the server would be a daemon outliving a supervisor killed
        with SIGKILL, holding its port; run directly, the kernel sends it SIGINT (fast
        shutdown) when we exit, however we exit. Call ``lock`` first.
        """
        if not self.is_initialized():
            self.initialize()
        else:
            self.stop_leftover()
        user = _run_as()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(find_bin_dir() / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)],
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=os.getgrouplist(user.pw_name, user.pw_gid) if user else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                # Own process group: Ctrl-C reaches the supervisor, which stops us in order.
                start_new_session=True,
                preexec_fn=preexec_die_with_parent(signal.SIGINT),
            )
        self.owned = True
        self._wait_ready()
        # Every start, not only after initdb: a first start killed between the two
        # would otherwise leave a cluster without its database for good.
        self._create_database()

    def exited(self) -> bool:
        """Whether the server this object started has stopped on its own."""
        return self.owned and self.process is not None and self.process.poll() is not None

    def stop_leftover(self) -> None:
        """Stop a server an earlier supervisor left (still shutting down, or started
        with pg_ctl by an older TMS): with the lock held, it is nobody's."""
        if self.is_running():
            self._pg_ctl_stop()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while postmaster_status(self.data_dir, self.process.pid) != _READY:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PostgresError(
                    f"PostgreSQL did not start ({self._first_problem()}); its log: {self.log_file}"
                )
            time.sleep(0.05)

    def _first_problem(self) -> str:
        for line in self.log_tail(40).splitlines():
            if "FATAL" in line or "PANIC" in line:
                return line.split("FATAL:", 1)[-1].split("PANIC:", 1)[-1].strip()
        return "no FATAL line in its log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _create_database(self) -> None:
        if (self.data_dir / "standby.signal").exists():
            return  # a standby is read-only; its database comes from its primary
        env = {**os.environ, "PGPASSWORD": self.password}
        result = self._run(
            ["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, DATABASE],
            env=env,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise PostgresError(f"createdb failed: {result.stderr.strip()}")

    def _pg_ctl_stop(self) -> None:
        self._run(
            [
                "pg_ctl",
                "stop",
                "-w",
                "-t",
                str(int(STOP_TIMEOUT_S)),
                "-m",
                "fast",
                "-D",
                str(self.data_dir),
            ]
        )

    def stop(self) -> None:
        """Fast shutdown of the server this object started, and release the lock."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    # Immediate shutdown: recovery replays the WAL at the next start.
                    self.process.send_signal(signal.SIGQUIT)
                    self.process.wait()
            self.process = None
        self.owned = False
        self.unlock()


@dataclass(frozen=True)
class PostmasterState:
    """What ``postmaster.pid`` says, read at once: pid, port and state ("ready"...)."""

    pid: int
    port: int
    status: str


def read_postmaster(data_dir: Path) -> PostmasterState | None:
    """The live server on ``data_dir`` as its ``postmaster.pid`` describes it, or None.

    One read: the file is written while the server starts and removed as it stops, so
    a second read could see another file, or none. A short or garbled one is None.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    except PermissionError:
        raise PostgresError(
            f"cannot read {data_dir / 'postmaster.pid'}: permission denied; run this "
            "command as the user that runs `tms up` (root for /var/lib/tms)"
        ) from None
    if len(lines) < 8 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
        return None
    state = PostmasterState(int(lines[0]), int(lines[3]), lines[7].strip())
    return state if _alive(state.pid) else None


def postmaster_status(data_dir: Path, pid: int | None = None) -> str | None:
    """The server's state ("ready", "starting", ...), or None when none runs (or not ``pid``)."""
    state = read_postmaster(data_dir)
    if state is None or (pid is not None and state.pid != pid):
        return None
    return state.status


def running_port(data_dir: Path) -> int | None:
    """The port of the server running on ``data_dir`` once it is ready, else None."""
    state = read_postmaster(data_dir)
    return state.port if state is not None and state.status == _READY else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live PostgreSQL server process (not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return _signal_reaches(pid)  # no /proc to read: the pid alone must do
    # "<pid> (<comm>) <state> ...": comm in parentheses may itself hold spaces.
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    state = stat[stat.rfind(")") + 2 :][:1]
    return comm == "postgres" and state != "Z"


def _signal_reaches(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
