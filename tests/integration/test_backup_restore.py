"""`tms db backup` and `tms db restore` on real PostgreSQL: a platform's database with
terminals, history in several partitions, alerts, commands and users is backed up,
restored into a new cluster and found the same table by table; the restored platform's
broker takes the terminals' secrets and the API its tokens. Rotation, and every refusal:
a damaged file, a database in use, a schema newer than the code."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlmodel import Session

from commands.queue import Requester, queue_command
from console import users
from ingest.retention import create_partition
from registry.provisioning import provision_terminal, revoke
from shared import schema
from shared.db import make_engine
from shared.ports import free_port
from tests.integration.platform import Platform, clean_env, make_data_dir, tms
from tests.waiting import wait_until
from tms.backup import BackupStopped, directory_lock, make_backup
from tms.backup_rules import BackupError, BackupName
from tms.postgres import EmbeddedPostgres
from tms.restore import known_revisions

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
OPERATOR = Requester("olga", "operator", "user", origin="10.0.0.7")


# -- a platform's database with something in every corner ---------------------------


@dataclass(frozen=True)
class Seeded:
    terminal_secret: str
    revoked_secret: str
    api_token: str


def _telemetry(conn: psycopg.Connection[Any], serial: str, at: datetime, n: int) -> None:
    conn.execute(
        "INSERT INTO telemetry (terminal_id, message_id, ts, device_status, firmware_version,"
        " cpu_pct, memory_pct, errors)"
        " SELECT (SELECT id FROM terminal WHERE serial = %(serial)s),"
        "        %(serial)s || '-' || %(at)s::text || '-' || i, %(at)s + i * interval '1 s',"
        "        'ok', '2.4.1', i * 0.37, 40.5, jsonb_build_array(jsonb_build_object('e', i))"
        " FROM generate_series(1, %(n)s) AS i",
        {"serial": serial, "at": at, "n": n},
    )


def seed(url: str, terminals: int = 12) -> Seeded:
    engine = make_engine(url, pool_size=1)
    try:
        with Session(engine) as session:
            secret = provision_terminal(session, "BK-0001", "Acme Stores", "LON-1")
            revoked = provision_terminal(session, "BK-0002", "Acme Stores", "LON-1")
            for n in range(3, terminals + 1):
                provision_terminal(session, f"BK-{n:04d}", "Café Ünïcode", f"S-{n % 3}")
            session.commit()
            revoke(session, "BK-0002")
            session.commit()
            admin = users.create_user(session, "ops-admin", "correct horse battery", "admin")
            users.create_user(session, "viewer-1", "correct horse battery", "viewer")
            token = users.create_api_token(session, admin, "nightly")
            for serial in ("BK-0001", "BK-0003", "BK-0004"):
                queue_command(session, OPERATOR, serial, "reboot")
            session.commit()
    finally:
        engine.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        # History in this month's partition, two months back (a partition made as
        # retention makes them), and years back (the default partition).
        two_months_back = (NOW - timedelta(days=62)).date().replace(day=1)
        with conn.transaction():
            create_partition(conn, two_months_back)
        for serial in ("BK-0001", "BK-0003", "BK-0004"):
            for at in (
                NOW - timedelta(hours=2),
                NOW - timedelta(days=62),
                NOW - timedelta(days=1200),
            ):
                _telemetry(conn, serial, at, 200)
        conn.execute(
            "INSERT INTO status_change (terminal_id, old_status, new_status, reason)"
            " SELECT id, 'provisioned', 'online', 'first heartbeat' FROM terminal"
        )
        conn.execute(
            "INSERT INTO terminal_log (terminal_id, at, kind, severity, code, message)"
            " SELECT id, now() - interval '3 days', 'event', 'warning', 'E42', 'paper low'"
            " FROM terminal"
        )
        for serial, status in (("BK-0001", "open"), ("BK-0003", "resolved")):
            conn.execute(
                "INSERT INTO alert (scope, kind, severity, status, message, count, terminal_id,"
                " customer_id, raised_at) SELECT 'terminal:' || serial, 'offline', 'critical',"
                " %s, serial || ' is offline', 2, id, customer_id, now() FROM terminal"
                " WHERE serial = %s",
                (status, serial),
            )
        conn.execute(
            "INSERT INTO dead_letter (topic, payload, reason, detail)"
            " VALUES ('tms/v1/X/telemetry', %s, 'bad_json', 'not JSON')",
            (bytes(range(256)),),
        )
        conn.execute(
            "INSERT INTO audit_event (actor, action, target, detail)"
            " VALUES ('cli:root', 'terminal.add', 'BK-0001', '{\"why\": \"test\"}')"
        )
    return Seeded(secret, revoked, token)


# -- comparing two databases -----------------------------------------------------------


def _catalogue(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What a restore must bring back besides the rows: every object and sequence."""
    queries = {
        "tables": "SELECT c.relname, c.relkind::text FROM pg_class c"
        " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
        " FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
        "triggers": "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal",
        "sequences": "SELECT sequencename, last_value FROM pg_sequences"
        " WHERE schemaname = 'public'",
        "extensions": "SELECT extname, extversion FROM pg_extension",
        "functions": "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
    }
    return {key: sorted(conn.execute(query).fetchall()) for key, query in queries.items()}


_CAST = re.compile(r"::(character varying|double precision|timestamp with time zone|\w+)(\[\])?")


def _normalized(definition: str) -> str:
    """An index's or a constraint's text without casts and parentheses: PostgreSQL
    deparses ``status IN ('a', 'b')`` differently once dumped and read back, with the
    same meaning ("= ANY (ARRAY['a'::varchar, ...])" against "= ANY ((ARRAY[...])::text[])")."""
    return re.sub(r"[\s()]", "", _CAST.sub("", definition))


def snapshot(url: str) -> dict[str, Any]:
    """Every table's row count and an MD5 of its rows in a fixed order, and the catalogue."""
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        found = _catalogue(conn)
        rows = {}
        for name, kind in found["tables"]:
            if kind != "r":
                continue  # a partitioned table's rows are its partitions'
            query = sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
                " FROM {} t"
            ).format(sql.Identifier(name))
            rows[name] = conn.execute(query).fetchone()
        found["rows"] = rows
        found["indexes"] = [(name, _normalized(text)) for name, text in found["indexes"]]
        found["constraints"] = [
            (table, name, _normalized(text)) for table, name, text in found["constraints"]
        ]
    return found


def _admin_url(server: EmbeddedPostgres, database: str = "postgres") -> str:
    return server.url.rsplit("/", 1)[0] + "/" + database


@contextmanager
def empty_database(server: EmbeddedPostgres) -> Iterator[str]:
    name = f"restore_{secrets.token_hex(4)}"
    with psycopg.connect(_admin_url(server), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield _admin_url(server, name)
    finally:
        with psycopg.connect(_admin_url(server), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _tables_in(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def restored_cluster(data_dir: Path) -> Iterator[str]:
    """The database of the (stopped) platform in ``data_dir``, opened for the test."""
    password = json.loads((data_dir / "secrets.json").read_text())["database_password"]
    server = EmbeddedPostgres(data_dir / "postgres", free_port(), password)
    assert server.lock(wait_s=10, holder="command")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def backup_with_cli(url: str, directory: Path, *args: str) -> Path:
    result = tms(
        "db", "backup", "--dir", str(directory), *args, env=clean_env(TMS_DATABASE_URL=url)
    )
    assert result.returncode == 0, result.stderr
    assert "backed up to" in result.stdout, result.stdout
    return Path(result.stdout.split("backed up to ", 1)[1].split(" (", 1)[0])


# -- the whole round trip ------------------------------------------------------------------


def test_a_backup_restored_into_a_new_cluster_is_the_same_and_the_platform_runs_on_it(
    database_url: str, tmp_path: Path
) -> None:
    seeded = seed(database_url)
    before = snapshot(database_url)
    filled = {name for name, (count, _) in before["rows"].items() if count}
    everywhere = {"terminal", "credential", "alert", "command", "user_account", "api_token",
                  "status_change", "dead_letter", "audit_event", "telemetry_default"}  # fmt: skip
    assert everywhere <= filled
    assert len([name for name in filled if name.startswith("telemetry_y")]) >= 2, filled

    started = time.monotonic()
    dump = backup_with_cli(database_url, tmp_path / "backups")
    backed_up_s = time.monotonic() - started
    assert dump.name.endswith(f"-rev{schema.current_revision(database_url)}.dump")
    assert dump.stat().st_mode & 0o077 == 0, "a dump holds password hashes: owner only"
    checksum = dump.with_name(dump.name + ".sha256").read_text()
    assert checksum == f"{hashlib.sha256(dump.read_bytes()).hexdigest()}  {dump.name}\n"

    # A new data directory: the restore makes its cluster (tms/postgres.py), as `tms up` would.
    data_dir = make_data_dir()
    try:
        started = time.monotonic()
        restored = tms("--data-dir", str(data_dir), "db", "restore", str(dump), env=clean_env())
        restored_s = time.monotonic() - started
        assert restored.returncode == 0, restored.stderr
        assert "checksum matches" in restored.stdout
        assert "made a new, empty PostgreSQL cluster" in restored.stdout
        assert "11 active broker accounts" in restored.stdout, restored.stdout
        print(f"\nbackup {backed_up_s:.1f} s, restore into a new cluster {restored_s:.1f} s")

        with restored_cluster(data_dir) as url:
            after = snapshot(url)
        assert after["rows"] == before["rows"]
        for key in before:
            assert after[key] == before[key], key

        _the_restored_platform_serves_its_old_secrets(data_dir, seeded)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _next_minute_at_least(seconds: float) -> datetime:
    moment = datetime.now() + timedelta(seconds=seconds)
    return (moment + timedelta(minutes=1)).replace(second=0, microsecond=0)


def _the_restored_platform_serves_its_old_secrets(data_dir: Path, seeded: Seeded) -> None:
    """`tms up` on the restored data directory: its broker builds the accounts from the
    restored credential table, and its daily backup runs."""
    from tests.integration.test_end_to_end import _api_get, _connect, _connect_when_accepted

    backup_at = _next_minute_at_least(20)
    platform = Platform(data_dir, extra_env={"TMS_BACKUP_DAILY_AT": f"{backup_at:%H:%M}"})
    platform.start()
    try:
        assert f"Backups   daily at {backup_at:%H:%M} into {data_dir / 'backups'}" in platform.text
        client = _connect_when_accepted(platform, "BK-0001", seeded.terminal_secret)
        client.loop_stop()
        client.disconnect()
        refused, rc = _connect(platform, "BK-0002", seeded.revoked_secret)
        refused.loop_stop()
        refused.disconnect()
        assert rc.is_failure, "a terminal revoked before the backup is refused after it"
        status, body = _api_get(platform, "/api/v1/terminals?per_page=100", seeded.api_token)
        assert status == 200, body
        assert "BK-0001" in {t["serial"] for t in body["terminals"]}

        made = wait_until(
            lambda: list((data_dir / "backups").glob("tms-*.dump")),
            "the daily backup of the restored platform",
            timeout=(backup_at - datetime.now()).total_seconds() + 120,
            interval=1.0,
        )
        assert len(made) == 1 and made[0].with_name(made[0].name + ".sha256").exists()
        status_file = json.loads((data_dir / "platform-status.json").read_text())
        assert status_file["parts"]["backup"]["state"] == "running"
    finally:
        assert platform.stop() == 0
    log = (data_dir / "logs" / "backup.log").read_text()
    assert f"daily backup at {backup_at:%H:%M}" in log and "backed up tms-" in log


# -- rotation ---------------------------------------------------------------------------


def test_rotation_keeps_the_newest_and_leaves_other_files_alone(
    database_url: str, tmp_path: Path
) -> None:
    directory = tmp_path / "backups"
    directory.mkdir()
    revision = schema.current_revision(database_url)
    assert revision is not None
    old = [BackupName.taken(NOW - timedelta(days=days), revision) for days in (30, 20, 3)]
    for name in old:
        (directory / name.file_name).write_bytes(b"old")
        (directory / name.checksum_name).write_text("x")
    (directory / "notes.txt").write_text("keep me")
    (directory / ".tms-20200101T000000Z-rev0001.dump.partial").write_bytes(b"killed")

    first = backup_with_cli(database_url, directory, "--keep", "3", "--max-age-days", "10")
    names = {path.name for path in directory.iterdir()}
    # By age: 30 and 20 days; by count: none more (3 = the new one and two others).
    assert names == {first.name, first.name + ".sha256", old[2].file_name,
                     old[2].checksum_name, "notes.txt", ".tms-backup.lock"}  # fmt: skip

    second = backup_with_cli(database_url, directory, "--keep", "2")
    third = backup_with_cli(database_url, directory, "--keep", "2")
    assert second.name != third.name  # two within one second are a second apart
    dumps = sorted(path.name for path in directory.glob("tms-*.dump"))
    assert dumps == sorted([second.name, third.name])
    assert sorted(p.name for p in directory.glob("tms-*.sha256")) == [d + ".sha256" for d in dumps]
    assert (directory / "notes.txt").read_text() == "keep me"


# -- refusals and failures ---------------------------------------------------------------


@pytest.fixture
def dump(database_url: str, tmp_path: Path) -> Path:
    seed(database_url, terminals=4)
    return backup_with_cli(database_url, tmp_path / "backups")


def test_a_damaged_backup_is_refused_before_anything_is_written(
    dump: Path, postgres_server: EmbeddedPostgres
) -> None:
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    with empty_database(postgres_server) as target:
        result = tms("db", "restore", str(dump), "--database-url", target)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"Error: {dump.name} does not match its checksum ({dump.name}.sha256): the file is "
            "damaged or was changed since the backup; restore another backup"
        )
        assert _tables_in(target) == 0


def test_a_backup_without_its_checksum_file_needs_no_checksum_said_aloud(
    dump: Path, postgres_server: EmbeddedPostgres
) -> None:
    dump.with_name(dump.name + ".sha256").unlink()
    with empty_database(postgres_server) as target:
        refused = tms("db", "restore", str(dump), "--database-url", target)
        assert refused.returncode == 1 and "pass --no-checksum" in refused.stderr
        done = tms("db", "restore", str(dump), "--database-url", target, "--no-checksum")
        assert done.returncode == 0, done.stderr
        assert "checksum not checked" in done.stdout
        assert schema.current_revision(target) == known_revisions()[-1]


def test_a_database_that_is_not_empty_is_refused(dump: Path, database_url: str) -> None:
    before = snapshot(database_url)
    result = tms("db", "restore", str(dump), "--database-url", database_url)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith("Error: the database 'test_") and "is not empty" in line, line
    assert "never over one in use" in line and "\n" not in line
    assert snapshot(database_url) == before


def test_a_running_platforms_own_database_is_refused(dump: Path) -> None:
    from tests.integration.platform import running_platform

    with running_platform() as platform:
        result = tms("--data-dir", str(platform.data_dir), "db", "restore", str(dump))
    assert result.returncode == 1 and "is not empty" in result.stderr, result.stderr


def test_a_schema_newer_than_the_code_is_refused(
    database_url: str, postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999'")
    dump = backup_with_cli(database_url, tmp_path)
    assert dump.name.endswith("-rev0999.dump")
    with empty_database(postgres_server) as target:
        result = tms("db", "restore", str(dump), "--database-url", target)
        assert result.returncode == 1
        assert "holds schema revision 0999, which this TMS does not know" in result.stderr
        assert _tables_in(target) == 0


def test_an_older_schema_is_restored_as_it_was_then_upgraded(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    head = schema.current_revision
    with empty_database(postgres_server) as old:
        schema.upgrade(old, "0013")
        with psycopg.connect(old, autocommit=True) as conn:
            conn.execute("INSERT INTO customer (name) VALUES ('Old Times Ltd')")
        dump = backup_with_cli(old, tmp_path)
    assert dump.name.endswith("-rev0013.dump")
    with empty_database(postgres_server) as target:
        result = tms("db", "restore", str(dump), "--database-url", target)
        assert result.returncode == 0, result.stderr
        assert "run `tms db upgrade`" in result.stdout
        assert head(target) == "0013"
    with empty_database(postgres_server) as target:
        result = tms("db", "restore", str(dump), "--database-url", target, "--upgrade")
        assert result.returncode == 0, result.stderr
        assert f"upgraded to schema revision {known_revisions()[-1]}" in result.stdout
        assert head(target) == known_revisions()[-1]
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT name FROM customer").fetchall() == [("Old Times Ltd",)]


def test_backup_errors_are_one_line(tmp_path: Path) -> None:
    closed = f"postgresql://tms:x@127.0.0.1:{free_port()}/tms"
    result = tms("db", "backup", "--dir", str(tmp_path), env=clean_env(TMS_DATABASE_URL=closed))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot reach PostgreSQL at 127.0.0.1:")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_a_second_backup_and_a_stop_leave_nothing_behind(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tms.backup as backup_module

    real_copy = backup_module._copy_out

    def disk_full(process: Any, out: Any, stop: Any) -> str:
        out.write(b"x" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(backup_module, "_copy_out", disk_full)
    with pytest.raises(BackupError, match=r"^no space left in .* after 0 MB of the dump"):
        make_backup(database_url, tmp_path, keep=3)
    assert [p.name for p in tmp_path.iterdir()] == [".tms-backup.lock"]
    monkeypatch.setattr(backup_module, "_copy_out", real_copy)

    with directory_lock(tmp_path), pytest.raises(BackupError, match="another backup is being"):
        make_backup(database_url, tmp_path, keep=3)

    stop = threading.Event()
    stop.set()
    with pytest.raises(BackupStopped):
        make_backup(database_url, tmp_path, keep=3, stop=stop)
    assert [p.name for p in tmp_path.iterdir()] == [".tms-backup.lock"]
    assert make_backup(database_url, tmp_path, keep=3).path.exists()


def test_a_restore_into_an_unreachable_database_is_one_line(dump: Path) -> None:
    closed = f"postgresql://tms:x@127.0.0.1:{free_port()}/tms"
    result = tms("db", "restore", str(dump), "--database-url", closed)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot reach PostgreSQL at 127.0.0.1:")
    assert result.stderr.count("\n") == 1, result.stderr
