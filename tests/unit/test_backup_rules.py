"""The pure rules of backups: names, rotation, checksum lines, the daily schedule, schema
revisions, the client programs; and the [backup] settings and the command's URL option."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.settings import load_settings
from tms.backup_rules import (
    RETRIES,
    RETRY_AFTER,
    BackupError,
    BackupName,
    RevisionFit,
    after_failure,
    checksum_line,
    choose_client,
    client_major,
    next_daily_run,
    parse_checksum_line,
    parse_daily_at,
    revision_fit,
    revision_in_dump_data,
    to_rotate,
)

NOW = datetime(2026, 12, 3, 3, 30, 5, tzinfo=UTC)
SHA = "ab" * 32


def daily(n: int, revision: str = "0014") -> BackupName:
    """The backup of n days before NOW."""
    return BackupName(NOW - timedelta(days=n), revision)


# -- names ----------------------------------------------------------------------


def test_a_name_says_when_and_at_which_revision_and_reads_back() -> None:
    name = BackupName.taken(datetime(2026, 12, 3, 4, 30, 5, 999_999, tzinfo=UTC), "0014")
    assert name.file_name == "tms-20261203T043005Z-rev0014.dump"
    assert name.checksum_name == "tms-20261203T043005Z-rev0014.dump.sha256"
    assert name.partial_name == ".tms-20261203T043005Z-rev0014.dump.partial"
    assert BackupName.parse(name.file_name) == name


def test_a_local_time_is_named_in_utc() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 7, 1, 5, 0, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert BackupName.taken(local, "0001").file_name == "tms-20260701T030000Z-rev0001.dump"


@pytest.mark.parametrize(
    "file_name",
    [
        "tms-20261203T043005Z-rev0014.dump.sha256",
        ".tms-20261203T043005Z-rev0014.dump.partial",
        "tms-20261203T043005-rev0014.dump",
        "tms-20261203T043005Z-0014.dump",
        "tms-20261203T043005Z-rev.dump",
        "tms-20261203T043005Z-rev00/14.dump",
        "notes.txt",
        "other-20261203T043005Z-rev0014.dump",
    ],
)
def test_other_files_are_not_backups(file_name: str) -> None:
    assert BackupName.parse(file_name) is None


def test_a_name_needs_a_utc_second_and_a_revision() -> None:
    with pytest.raises(ValueError):
        BackupName(datetime(2026, 12, 3), "0014")
    with pytest.raises(ValueError):
        BackupName(NOW.replace(microsecond=5), "0014")
    with pytest.raises(ValueError):
        BackupName(NOW, "../x")


def test_a_second_backup_within_the_same_second_is_named_a_second_later() -> None:
    assert daily(0).later().created_at == NOW + timedelta(seconds=1)


# -- rotation -------------------------------------------------------------------


def test_rotation_keeps_the_newest_by_count_the_new_one_included() -> None:
    backups = [daily(n) for n in range(10)]
    doomed = to_rotate(backups, keep=7, max_age=None, now=NOW, just_made=daily(0))
    assert doomed == [daily(9), daily(8), daily(7)]


def test_rotation_by_age_deletes_what_is_older_even_within_the_count() -> None:
    backups = [daily(n) for n in range(5)]
    doomed = to_rotate(backups, keep=30, max_age=timedelta(days=2), now=NOW, just_made=daily(0))
    assert doomed == [daily(4), daily(3)]


def test_rotation_never_deletes_the_backup_just_made() -> None:
    # The clock says it is a year old (a host clock set back, then corrected).
    old = BackupName(NOW - timedelta(days=365), "0014")
    backups = [old, daily(1), daily(2)]
    doomed = to_rotate(backups, keep=1, max_age=timedelta(days=1), now=NOW, just_made=old)
    assert old not in doomed
    assert doomed == [daily(2), daily(1)]


def test_rotation_with_keep_one_leaves_only_the_new_backup() -> None:
    backups = [daily(n) for n in range(3)]
    assert to_rotate(backups, keep=1, max_age=None, now=NOW, just_made=daily(0)) == [
        daily(2),
        daily(1),
    ]


def test_rotation_with_fewer_backups_than_keep_deletes_nothing() -> None:
    backups = [daily(0), daily(1)]
    assert to_rotate(backups, keep=7, max_age=None, now=NOW, just_made=daily(0)) == []


def test_rotation_refuses_to_keep_nothing() -> None:
    with pytest.raises(ValueError):
        to_rotate([], keep=0, max_age=None, now=NOW, just_made=daily(0))


# -- checksum files -------------------------------------------------------------


def test_the_checksum_line_is_what_sha256sum_writes_and_reads_back() -> None:
    line = checksum_line(SHA, "tms-x.dump")
    assert line == f"{SHA}  tms-x.dump\n"
    assert parse_checksum_line(line, "tms-x.dump") == SHA
    # sha256sum's binary mode marker, and a path before the name.
    assert parse_checksum_line(f"{SHA} */backups/tms-x.dump\n", "tms-x.dump") == SHA


def test_a_checksum_for_another_file_or_garbage_is_refused() -> None:
    with pytest.raises(BackupError, match="is for 'tms-y.dump'"):
        parse_checksum_line(checksum_line(SHA, "tms-y.dump"), "tms-x.dump")
    with pytest.raises(BackupError, match="not a sha256sum line"):
        parse_checksum_line("deadbeef  tms-x.dump\n", "tms-x.dump")


# -- the daily schedule ------------------------------------------------------------


def test_daily_at_is_a_time_of_day_or_nothing() -> None:
    assert parse_daily_at("03:30") == time(3, 30)
    assert parse_daily_at("23:59") == time(23, 59)
    assert parse_daily_at("") is None
    for bad in ("3:30", "24:00", "03:60", "03:30:00", "noon"):
        with pytest.raises(ValueError):
            parse_daily_at(bad)


def test_the_next_run_is_today_if_still_ahead_else_tomorrow() -> None:
    at = time(3, 30)
    assert next_daily_run(datetime(2026, 12, 3, 1, 0), at) == datetime(2026, 12, 3, 3, 30)
    assert next_daily_run(datetime(2026, 12, 3, 3, 30), at) == datetime(2026, 12, 4, 3, 30)
    assert next_daily_run(datetime(2026, 12, 31, 23, 0), at) == datetime(2027, 1, 1, 3, 30)


def test_a_failed_backup_is_retried_soon_a_few_times_then_tomorrow() -> None:
    now = datetime(2026, 12, 3, 3, 30)
    assert after_failure(now, 1, time(3, 30)) == now + RETRY_AFTER
    assert after_failure(now, RETRIES, time(3, 30)) == now + RETRY_AFTER
    assert after_failure(now, RETRIES + 1, time(3, 30)) == datetime(2026, 12, 4, 3, 30)


# -- schema revisions ---------------------------------------------------------------

KNOWN = ["0001", "0002", "0003"]


def test_a_dump_revision_is_current_older_or_unknown() -> None:
    assert revision_fit("0003", KNOWN) is RevisionFit.CURRENT
    assert revision_fit("0001", KNOWN) is RevisionFit.OLDER
    assert revision_fit("0004", KNOWN) is RevisionFit.UNKNOWN
    assert revision_fit("0001", []) is RevisionFit.UNKNOWN


def test_the_revision_is_read_from_pg_restores_data_output() -> None:
    output = (
        "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\n"
        "COPY public.alembic_version (version_num) FROM stdin;\n0014\n\\.\n\n"
    )
    assert revision_in_dump_data(output) == "0014"
    assert revision_in_dump_data("SET x = 1;\n") is None
    two_rows = "COPY public.alembic_version (version_num) FROM stdin;\n0013\n0014\n\\.\n"
    assert revision_in_dump_data(two_rows) is None


# -- client programs --------------------------------------------------------------


def test_the_client_of_the_servers_major_else_the_oldest_newer_one() -> None:
    installed = {13: Path("/13/pg_dump"), 15: Path("/15/pg_dump"), 17: Path("/17/pg_dump")}
    assert choose_client(15, installed) == Path("/15/pg_dump")
    assert choose_client(14, installed) == Path("/15/pg_dump")
    assert choose_client(12, installed) == Path("/13/pg_dump")
    assert choose_client(18, installed) is None
    assert choose_client(15, {}) is None


def test_the_major_version_of_a_client_program() -> None:
    assert client_major("pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)\n") == 15
    assert client_major("pg_restore (PostgreSQL) 17devel\n") == 17
    assert client_major("something else") is None


# -- settings and the upgrade's URL -------------------------------------------------


def test_backup_settings_default_and_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(env={"TMS_DATA_DIR": str(tmp_path)})
    assert settings.backup.daily_at == "03:30" and settings.backup.keep == 7
    assert settings.backup.dir_in(settings.paths.data_dir) == tmp_path / "backups"
    env = {"TMS_BACKUP_DIR": str(tmp_path / "b"), "TMS_BACKUP_KEEP": "3"}
    changed = load_settings(env={**env, "TMS_BACKUP_DAILY_AT": ""})
    assert changed.backup.keep == 3 and changed.backup.daily_at == ""
    assert changed.backup.dir_in(Path("/unused")) == tmp_path / "b"


def test_bad_backup_settings_are_refused_with_their_name() -> None:
    from shared.errors import SettingsError

    with pytest.raises(SettingsError, match="TMS_BACKUP_DAILY_AT"):
        load_settings(env={"TMS_BACKUP_DAILY_AT": "3:30"})
    with pytest.raises(SettingsError, match="TMS_BACKUP_KEEP"):
        load_settings(env={"TMS_BACKUP_KEEP": "0"})


def test_the_shipped_config_has_the_backup_section() -> None:
    repo = Path(__file__).resolve().parents[2]
    settings = load_settings(repo / "config" / "tms.toml", env={})
    assert settings.backup.daily_at == "03:30" and settings.backup.max_age_days == 0


def test_the_upgrades_lock_timeout_rides_in_the_url() -> None:
    from tms.db_cli import with_lock_timeout

    url = "postgresql://tms:p%40ss@db:5432/tms?sslmode=require"
    query = parse_qs(urlsplit(with_lock_timeout(url, 2.5)).query)
    assert query == {"sslmode": ["require"], "options": ["-c lock_timeout=2500"]}
    assert urlsplit(with_lock_timeout(url, 2.5)).netloc == "tms:p%40ss@db:5432"
    kept = with_lock_timeout("postgresql://h/tms?options=-c%20search_path%3Dx", 1)
    assert parse_qs(urlsplit(kept).query)["options"] == ["-c search_path=x -c lock_timeout=1000"]
    assert with_lock_timeout(url, 0) == url


def test_tms_up_runs_the_daily_backup_only_when_it_has_a_time(tmp_path: Path) -> None:
    from tms.backup_daily import daily_backup_child

    settings = load_settings(env={"TMS_DATA_DIR": str(tmp_path), "TMS_BACKUP_KEEP": "4"})
    child = daily_backup_child(settings, "postgresql://tms:x@127.0.0.1:5433/tms")
    assert child is not None and child.args == ["db", "backup-daily"]
    assert child.env["TMS_BACKUP_KEEP"] == "4"
    assert child.env["TMS_BACKUP_DIR"] == str(tmp_path / "backups")
    assert child.env["TMS_DATABASE_URL"].endswith("/tms")
    off = load_settings(env={"TMS_DATA_DIR": str(tmp_path), "TMS_BACKUP_DAILY_AT": ""})
    assert daily_backup_child(off, "postgresql://x@h/tms") is None


def test_the_daily_job_retries_a_failed_backup_then_waits_for_the_next_day(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import threading

    from shared.settings import BackupSettings
    from tms import backup_daily

    start = datetime(2026, 12, 3, 3, 0)
    due = datetime(2026, 12, 3, 3, 30)
    # What the job's clock says on each look: it is never made to wait in real time.
    times = iter([start, due, due, due + RETRY_AFTER, due + RETRY_AFTER])
    last = [start]

    def clock() -> datetime:
        last[0] = next(times, last[0])
        return last[0]

    stop = threading.Event()
    attempts: list[datetime] = []

    def fake_backup(url: str, directory: Path, **_: object) -> object:
        attempts.append(last[0])
        if len(attempts) == 1:
            raise BackupError("no space left in /b: free space there")
        stop.set()  # after the second, successful one
        return type("R", (), {"path": directory / "x.dump", "size": 1, "revision": "0014",
                              "seconds": 0.1, "deleted": ()})()  # fmt: skip

    monkeypatch.setattr(backup_daily, "make_backup", fake_backup)
    backup_daily.run_daily("postgresql://x@h/tms", tmp_path, BackupSettings(), time(3, 30), stop,
                           local_now=clock)  # fmt: skip
    assert attempts == [due, due + RETRY_AFTER]


def test_a_missing_client_program_says_which_package_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tms import pg_clients

    monkeypatch.setattr(pg_clients, "DEBIAN_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("TMS_PG_BIN", raising=False)
    with pytest.raises(BackupError) as raised:
        pg_clients.find_client("pg_dump", 16)
    assert str(raised.value) == (
        "pg_dump for PostgreSQL 16 not found: install Debian's postgresql-client-16 "
        "(apt-get install postgresql-client-16) or set TMS_PG_BIN to the directory holding "
        "pg_dump"
    )
    old = tmp_path / "13" / "bin"
    old.mkdir(parents=True)
    (old / "pg_dump").touch()
    with pytest.raises(BackupError, match="PostgreSQL 16 not found"):
        pg_clients.find_client("pg_dump", 16)
    assert pg_clients.find_client("pg_dump", 12) == old / "pg_dump"


def test_a_client_program_gets_the_password_in_its_environment_only() -> None:
    from tms.pg_clients import client_args

    dbname, env = client_args("postgresql://tms:s3cr%40t@db.example:5433/tms?sslmode=require")
    assert "s3cr" not in dbname and env["PGPASSWORD"] == "s3cr@t"
    assert "host=db.example" in dbname and "port=5433" in dbname and "sslmode=require" in dbname


def test_a_client_programs_error_line() -> None:
    from tms.pg_clients import first_error

    stderr = "pg_dump: warning: x\npg_dump: error: connection failed\n   detail  here\n"
    assert first_error(stderr) == "pg_dump: error: connection failed"
    assert first_error("only   this\n") == "only this"
    assert first_error("") == "no message"
