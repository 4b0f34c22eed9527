"""Continuous archiving, the option beside the daily dump: a cluster archives its WAL, a
base backup is taken, and a new cluster made from that backup and the archive recovers
to a moment between two writes: the first is there, the second is not. The steps are
those of docs/operations.md ("Point-in-time recovery")."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shared.ports import free_port
from tests.waiting import wait_until
from tms.postgres import EmbeddedPostgres, find_bin_dir

pytestmark = pytest.mark.integration


def _server_user() -> pwd.struct_passwd | None:
    """Who PostgreSQL runs as (tms/postgres.py): ``postgres`` when the tests run as root."""
    return pwd.getpwnam("postgres") if os.geteuid() == 0 else None


def _owned_by_server(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    user = _server_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o700)
    return path


def _as_server(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    user = _server_user()
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        args,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        capture_output=True,
        text=True,
        cwd="/",
        **kwargs,
    )


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="tms-test-pitr-"))
    root.chmod(0o755)  # the server's user must reach its directories inside
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _in_recovery(url: str) -> bool:
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.OperationalError:
        return True  # not yet consistent enough to take a connection
    return bool(row and row[0])


def _rows(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT what FROM probe ORDER BY id")]


def test_a_new_cluster_recovers_to_a_point_in_time_from_a_base_backup_and_the_archive(
    scratch: Path,
) -> None:
    archive = _owned_by_server(scratch / "wal-archive")
    password = secrets.token_urlsafe(16)
    primary = EmbeddedPostgres(scratch / "primary", free_port(), password)
    primary.initialize()
    with (primary.data_dir / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# continuous archiving (docs/operations.md)\nwal_level = replica\n"
            f"archive_mode = on\narchive_command = 'test ! -f {archive}/%f && cp %p {archive}/%f'\n"
        )
    primary.start()
    try:
        with psycopg.connect(primary.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE probe (id serial PRIMARY KEY, what text NOT NULL)")
            conn.execute("INSERT INTO probe (what) VALUES ('before the base backup')")

        base = _owned_by_server(scratch / "recovered") / "data"
        taken = _as_server(
            [str(find_bin_dir() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
             "-U", "tms", "-D", str(base), "-X", "stream", "--checkpoint=fast", "--no-password"],
            env={**os.environ, "PGPASSWORD": password},
        )  # fmt: skip
        assert taken.returncode == 0, taken.stderr

        with psycopg.connect(primary.url, autocommit=True) as conn:
            conn.execute("INSERT INTO probe (what) VALUES ('after the base backup')")
            target = conn.execute("SELECT clock_timestamp()").fetchone()
            assert target is not None
            time.sleep(1.1)  # commit times are compared to the target: keep them apart
            conn.execute("INSERT INTO probe (what) VALUES ('after the target time')")
            switched = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            assert switched is not None
            wait_until(
                lambda: (archive / switched[0]).exists(),
                f"the WAL segment {switched[0]} in the archive",
                timeout=60,
            )
        assert _rows(primary.url) == [
            "before the base backup",
            "after the base backup",
            "after the target time",
        ]
    finally:
        primary.stop()  # the primary is lost

    with (base / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# point-in-time recovery (docs/operations.md)\narchive_mode = off\n"
            f"restore_command = 'cp {archive}/%f %p'\n"
            f"recovery_target_time = '{target[0].isoformat()}'\n"
            "recovery_target_action = 'promote'\n"
        )
    signal_file = _as_server(["touch", str(base / "recovery.signal")])
    assert signal_file.returncode == 0, signal_file.stderr
    port = free_port()
    log = base.parent / "recovery.log"
    pg_ctl = str(find_bin_dir() / "pg_ctl")
    started = _as_server(
        [pg_ctl, "start", "-D", str(base), "-o", f"-p {port}", "-l", str(log), "-w", "-t", "120"]
    )
    assert started.returncode == 0, started.stdout + started.stderr
    recovered = f"postgresql://tms:{password}@127.0.0.1:{port}/tms"
    try:
        # It answers (read-only) while it replays; recovery is over once it is promoted.
        wait_until(lambda: not _in_recovery(recovered), "the end of the recovery", timeout=120)
        assert _rows(recovered) == ["before the base backup", "after the base backup"]
        with psycopg.connect(recovered, autocommit=True) as conn:
            conn.execute("INSERT INTO probe (what) VALUES ('after the recovery')")
        assert "recovery stopping before commit of transaction" in log.read_text()
    finally:
        _as_server([pg_ctl, "stop", "-D", str(base), "-m", "fast", "-w"])

    # `tms up` takes the recovered cluster as its own from now on.
    cluster = EmbeddedPostgres(base.parent, free_port(), password)
    cluster.start()
    try:
        assert len(_rows(cluster.url)) == 3
    finally:
        cluster.stop()
