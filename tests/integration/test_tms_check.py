"""`tms check` against a real PostgreSQL and a real Mosquitto: all ok when all is, and one
precise FAIL line for each thing broken on purpose."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.certs import TlsFiles, init_certs
from rollouts.library import write_signing_key
from shared import schema
from shared.firmware_signature import generate_key, private_key_pem
from shared.models import AccountKind
from shared.ports import free_port
from tests.fixtures.broker import RunningBroker
from tests.integration.platform import clean_env, tms

pytestmark = pytest.mark.integration

CONSOLE_KEY = "a-test-secret-key-of-enough-length"


def check_env(files: Path, **extra: str) -> dict[str, str]:
    """Every port the platform would listen on free, every file under ``files``."""
    env = {
        "TMS_DATA_DIR": str(files / "data"),
        "TMS_BROKER_PORT": str(free_port()),
        "TMS_BROKER_TLS_PORT": str(free_port()),
        "TMS_CONSOLE_PORT": str(free_port()),
        "TMS_INGEST_METRICS_PORT": str(free_port()),
        "TMS_DATABASE_PORT": str(free_port()),
        "TMS_BROKER_CERTS_DIR": str(files / "certs"),
        "TMS_FIRMWARE_SIGNING_KEY": str(files / "signing.key"),
        "TMS_FIRMWARE_STORE_DIR": str(files / "firmware"),
        "TMS_CONSOLE_SECRET_KEY": CONSOLE_KEY,
    }
    return clean_env(**{**env, **extra})


def run_check(env: dict[str, str], *args: str) -> tuple[int, dict[str, list[dict[str, str]]]]:
    """Exit status and the checks by name, from `tms check --json`."""
    result = tms("check", "--json", "--timeout", "10", *args, env=env, timeout=180)
    assert "Traceback" not in result.stderr, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    found: dict[str, list[dict[str, str]]] = {}
    for entry in document["checks"]:
        found.setdefault(entry["check"], []).append(entry)
    assert document["ok"] is (result.returncode == 0)
    return result.returncode, found


def only(found: dict[str, list[dict[str, str]]], check: str) -> dict[str, str]:
    (entry,) = found[check]
    return entry


def with_url(url: str, *, password: str | None = None, database: str | None = None) -> str:
    head, name = url.rsplit("/", 1)
    if password is not None:
        scheme, rest = head.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        head = f"{scheme}://{credentials.split(':', 1)[0]}:{password}@{host}"
    return f"{head}/{database or name}"


def signing_key(path: Path) -> Path:
    write_signing_key(path, private_key_pem(generate_key()))
    return path


@pytest.fixture
def platform_env(
    mosquitto_broker: RunningBroker, database_url: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """A production-like configuration whose every check passes: the database URL, the
    broker with the services' accounts, TLS files, the signing key."""
    ingest = mosquitto_broker.service_account(AccountKind.INGEST, "tms-ingest")
    console = mosquitto_broker.service_account(AccountKind.CONSOLE, "tms-console")
    init_certs(TlsFiles(tmp_path / "certs"), ["localhost", "127.0.0.1"])
    signing_key(tmp_path / "signing.key")
    port = str(mosquitto_broker.port)
    yield check_env(
        tmp_path,
        # Where `tms broker` keeps Mosquitto's files: the broker's port is TMS's own.
        TMS_DATA_DIR=str(mosquitto_broker.directory),
        TMS_DATABASE_URL=database_url,
        TMS_BROKER_PORT=port,
        TMS_INGEST_MQTT_PORT=port,
        TMS_INGEST_MQTT_USERNAME="tms-ingest",
        TMS_INGEST_MQTT_PASSWORD=ingest,
        TMS_CONSOLE_MQTT_PORT=port,
        TMS_CONSOLE_MQTT_USERNAME="tms-console",
        TMS_CONSOLE_MQTT_PASSWORD=console,
    )


def test_everything_ok_exits_0_with_every_check_ok(platform_env: dict[str, str]) -> None:
    code, found = run_check(platform_env)
    not_ok = [e for entries in found.values() for e in entries if e["status"] != "ok"]
    assert not not_ok, not_ok
    assert code == 0
    for check in ("database server", "database login", "database", "schema", "broker", "TLS"):
        assert check in found
    assert "held by TMS itself" in only(found, "port broker")["message"]
    assert only(found, "ingest MQTT login")["message"].startswith("'tms-ingest' logged in")
    assert only(found, "console MQTT login")["message"].startswith("'tms-console' logged in")


def test_the_text_report_is_one_line_per_check_and_a_summary(
    platform_env: dict[str, str],
) -> None:
    result = tms("check", env=platform_env, timeout=180)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[-1] == "all checks passed (0 warning(s))"
    assert all(line.startswith("ok   ") for line in lines[:-1]), result.stdout
    assert result.stderr == ""


def test_bad_broker_credentials_fail_the_service_whose_they_are(
    platform_env: dict[str, str],
) -> None:
    env = {**platform_env, "TMS_INGEST_MQTT_PASSWORD": "not-the-secret-of-tms-ingest"}
    code, found = run_check(env)
    assert code == 1
    ingest = only(found, "ingest MQTT login")
    assert ingest["status"] == "fail"
    assert "refused 'tms-ingest'" in ingest["message"]
    assert "TMS_INGEST_MQTT_PASSWORD" in ingest["message"]
    assert only(found, "console MQTT login")["status"] == "ok"
    assert only(found, "broker")["status"] == "ok"


def test_a_stopped_broker_fails_and_the_logins_are_not_tried(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    env = check_env(
        tmp_path,
        TMS_DATABASE_URL=database_url,
        TMS_BROKER_PORT=str(port),
        TMS_INGEST_MQTT_PORT=str(port),
        TMS_INGEST_MQTT_USERNAME="tms-ingest",
        TMS_INGEST_MQTT_PASSWORD="whatever-it-is",
    )
    code, found = run_check(env)
    assert code == 1
    broker = only(found, "broker")
    assert broker["status"] == "fail"
    assert f"cannot reach 127.0.0.1:{port}" in broker["message"]
    assert "start the broker" in broker["message"]
    assert only(found, "ingest MQTT login")["status"] == "skip"
    assert only(found, "schema")["status"] == "ok"  # the rest is still checked


def test_a_wrong_database_password_is_the_login_line(database_url: str, tmp_path: Path) -> None:
    env = check_env(tmp_path, TMS_DATABASE_URL=with_url(database_url, password="wrong-password"))
    code, found = run_check(env)
    assert code == 1
    assert only(found, "database server")["status"] == "ok"
    login = only(found, "database login")
    assert login["status"] == "fail"
    assert "refused the password of user 'tms': check TMS_DATABASE_URL" in login["message"]
    assert only(found, "schema")["status"] == "skip"


def test_a_missing_database_says_so(database_url: str, tmp_path: Path) -> None:
    env = check_env(tmp_path, TMS_DATABASE_URL=with_url(database_url, database="no_such_database"))
    code, found = run_check(env)
    assert code == 1
    assert only(found, "database login")["status"] == "ok"
    missing = only(found, "database")
    assert missing["status"] == "fail"
    assert "has no database 'no_such_database'" in missing["message"]


@pytest.fixture
def old_database(database_url: str) -> Iterator[tuple[str, str]]:
    """A database migrated only to the revision before the newest two: (url, revision)."""
    revisions = [
        r.revision
        for r in ScriptDirectory.from_config(schema.alembic_config(database_url)).walk_revisions()
    ]
    older = revisions[2]
    name = f"check_old_{os.getpid()}"
    admin = with_url(database_url, database="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = with_url(database_url, database=name)
    try:
        schema.upgrade(url, older)
        yield url, older
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_schema_behind_says_run_tms_db_upgrade(
    old_database: tuple[str, str], tmp_path: Path
) -> None:
    url, revision = old_database
    code, found = run_check(check_env(tmp_path, TMS_DATABASE_URL=url))
    assert code == 1
    behind = only(found, "schema")
    assert behind["status"] == "fail"
    assert f"at revision {revision}, 2 behind" in behind["message"]
    assert behind["message"].endswith("run `tms db upgrade`")


def _expired_server_cert(files: TlsFiles) -> None:
    """Replace server.pem by one for the same key, signed by the same CA, expired."""
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    expired = (
        x509.CertificateBuilder()
        .subject_name(server.subject)
        .issuer_name(ca.subject)
        .public_key(server.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now - datetime.timedelta(days=2))
        .sign(ca_key, hashes.SHA256())
    )
    files.server_cert.write_bytes(expired.public_bytes(serialization.Encoding.PEM))


def _other_key(files: TlsFiles) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    files.server_key.write_bytes(pem)


@pytest.mark.parametrize(
    ("spoil", "says"),
    [(_expired_server_cert, "expired on"), (_other_key, "server.key is not the key of")],
)
def test_an_expired_or_mismatched_certificate_fails(
    spoil: Any, says: str, database_url: str, tmp_path: Path
) -> None:
    files = init_certs(TlsFiles(tmp_path / "certs"), ["localhost", "127.0.0.1"])
    spoil(files)
    code, found = run_check(check_env(tmp_path, TMS_DATABASE_URL=database_url))
    assert code == 1
    tls = only(found, "TLS")
    assert tls["status"] == "fail"
    assert says in tls["message"]
    assert "tms certs init --force" in tls["message"] or "restore the pair" in tls["message"]


def test_a_signing_key_others_may_read_fails(database_url: str, tmp_path: Path) -> None:
    key = signing_key(tmp_path / "signing.key")
    key.chmod(0o644)
    code, found = run_check(check_env(tmp_path, TMS_DATABASE_URL=database_url))
    assert code == 1
    verdict = only(found, "firmware signing key")
    assert verdict["status"] == "fail"
    assert "mode 0644" in verdict["message"]
    assert f"chmod 600 {key}" in verdict["message"]


def test_a_config_file_with_a_bad_value_names_the_key_and_checks_nothing_else(
    tmp_path: Path,
) -> None:
    config = tmp_path / "tms.toml"
    config.write_text('[console]\nrefresh_s = 0\n[ingest]\nbatch_max = "many"\n')
    env = check_env(tmp_path)
    code, found = run_check(env, "--config", str(config))
    assert code == 1
    messages = sorted(e["message"] for e in found["config"])
    assert len(messages) == 2
    assert messages[0].startswith(f"bad value for [console] refresh_s = 0 in {config}")
    assert messages[1].startswith(f"bad value for [ingest] batch_max = 'many' in {config}")
    assert [e["status"] for e in found["the rest"]] == ["skip"]
    assert "database" not in found
    # The text report: the same, one line each, never a traceback.
    result = tms("check", "--config", str(config), env=env, timeout=120)
    assert result.returncode == 1
    assert "FAIL config: bad value for [console] refresh_s = 0" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_bad_environment_variable_is_a_fail_line_not_a_stop_before_the_check(
    tmp_path: Path,
) -> None:
    env = check_env(tmp_path, TMS_BROKER_PORT="abc")
    code, found = run_check(env)
    assert code == 1
    (entry,) = found["config"]
    assert entry["status"] == "fail"
    assert "TMS_BROKER_PORT" in entry["message"] and "'abc'" in entry["message"]
    # Given before the command too: the root's own settings do not stop the check.
    config = tmp_path / "tms.toml"
    config.write_text("[console]\nrefresh_s = 0\n")
    result = tms("--config", str(config), "check", env=check_env(tmp_path), timeout=120)
    assert result.returncode == 1
    assert f"FAIL config: bad value for [console] refresh_s = 0 in {config}" in result.stdout
    # Any other command still refuses at once, in one line.
    other = tms("terminal", "list", env=env, timeout=60)
    assert other.returncode == 1
    assert "TMS_BROKER_PORT" in other.stderr and "Traceback" not in other.stderr
