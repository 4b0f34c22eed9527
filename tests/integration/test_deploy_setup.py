"""deploy/docker/tms-setup and tms-entrypoint, run as the Compose file runs them, on a
real PostgreSQL: what they make, that a second run changes nothing, and that the MQTT
secrets they hand to the services are the accounts' real ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from sqlmodel import Session

from registry.provisioning import find_credential
from shared.credentials import StoredSecret, verify_secret
from shared.db import make_engine
from shared.models import AccountKind

pytestmark = pytest.mark.integration

DOCKER = Path(__file__).resolve().parents[2] / "deploy" / "docker"


def environment(tmp_path: Path, database_url: str) -> dict[str, str]:
    """What compose.yaml's `setup` service gets, with the volumes as directories here."""
    for name in ("data", "certs", "ca-key", "accounts"):
        (tmp_path / name).mkdir(exist_ok=True)
    return {
        # The image's PATH starts with the venv holding `tms`.
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMS_DATABASE_URL": database_url,
        "TMS_DATA_DIR": str(tmp_path / "data"),
        "TMS_BROKER_CERTS_DIR": str(tmp_path / "certs"),
        "SETUP_BROKER_HOSTNAME": "mqtt.example.net",
        "SETUP_CA_KEY_DIR": str(tmp_path / "ca-key"),
        "SETUP_ACCOUNTS_DIR": str(tmp_path / "accounts"),
    }


def run_setup(env: dict[str, str]) -> str:
    result = subprocess.run(
        ["sh", str(DOCKER / "tms-setup")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def entrypoint_env(env: dict[str, str], files: str) -> dict[str, str]:
    """The environment tms-entrypoint hands to the service's command."""
    result = subprocess.run(
        ["sh", str(DOCKER / "tms-entrypoint"), "env"],
        env={**env, "ENTRYPOINT_ENV_FILES": files},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def stored_secret(database_url: str, username: str) -> tuple[str, StoredSecret]:
    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine) as session:
            credential = find_credential(session, username)
            assert credential is not None, username
            return credential.kind, StoredSecret(credential.salt, credential.secret_hash)
    finally:
        engine.dispose()


def test_setup_makes_certificates_key_and_service_accounts_once(
    tmp_path: Path, database_url: str
) -> None:
    env = environment(tmp_path, database_url)
    run_setup(env)

    certs = tmp_path / "certs"
    assert sorted(p.name for p in certs.iterdir()) == ["ca.pem", "server.key", "server.pem"]
    # The CA key is kept out of the volume every service mounts.
    assert (tmp_path / "ca-key" / "ca.key").is_file()
    server = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"mqtt.example.net", "broker"}
    assert (tmp_path / "data" / "firmware-signing.key").is_file()

    accounts = tmp_path / "accounts"
    for service, username, kind, prefix in (
        ("ingest", "tms-ingest", AccountKind.INGEST, "TMS_INGEST"),
        ("console", "tms-console", AccountKind.CONSOLE, "TMS_CONSOLE"),
    ):
        path = accounts / f"{service}.env"
        assert path.stat().st_mode & 0o777 == 0o600
        given = entrypoint_env(env, str(path))
        assert given[f"{prefix}_MQTT_USERNAME"] == username
        stored_kind, stored = stored_secret(database_url, username)
        assert stored_kind == kind.value
        assert verify_secret(given[f"{prefix}_MQTT_PASSWORD"], stored)

    # Again: nothing is replaced, so running services keep working secrets.
    before = {p: p.read_bytes() for p in [*certs.iterdir(), *accounts.iterdir()]}
    key_before = (tmp_path / "data" / "firmware-signing.key").read_bytes()
    hash_before = stored_secret(database_url, "tms-ingest")[1]
    output = run_setup(env)
    assert "present" in output
    assert {p: p.read_bytes() for p in before} == before
    assert (tmp_path / "data" / "firmware-signing.key").read_bytes() == key_before
    assert stored_secret(database_url, "tms-ingest")[1] == hash_before


def test_a_lost_account_file_gets_a_new_working_secret(tmp_path: Path, database_url: str) -> None:
    env = environment(tmp_path, database_url)
    run_setup(env)
    path = tmp_path / "accounts" / "ingest.env"
    old = entrypoint_env(env, str(path))["TMS_INGEST_MQTT_PASSWORD"]
    path.unlink()
    run_setup(env)
    new = entrypoint_env(env, str(path))["TMS_INGEST_MQTT_PASSWORD"]
    stored = stored_secret(database_url, "tms-ingest")[1]
    assert new != old
    assert verify_secret(new, stored) and not verify_secret(old, stored)


def test_entrypoint_refuses_to_start_without_its_account_file(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(DOCKER / "tms-entrypoint"), "true"],
        env={**os.environ, "ENTRYPOINT_ENV_FILES": str(tmp_path / "ingest.env")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "ingest.env is missing" in result.stderr
