"""The broker daemon and its commands: start, stop, failure, provisioning from the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from broker.errors import BrokerError, MosquittoError
from broker.service import run_broker_service
from registry import provisioning
from registry.errors import ProvisioningError
from shared.db import make_engine
from shared.models import AccountKind, Credential, Store, Terminal
from shared.ports import free_port, port_accepts
from shared.settings import BrokerSettings
from tests.fixtures.broker import MqttProbe
from tests.waiting import wait_until
from tms.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tms-test-broker-") as name:
        Path(name).chmod(0o755)  # reachable by the mosquitto user when run as root
        yield Path(name)


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _mosquittos_in(directory: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "mosquitto" and any(str(directory) in a for a in cmdline):
            found.append(proc)
    return found


def test_provisioning_creates_terminal_store_and_hashed_credential(session: Session) -> None:
    secret = provisioning.provision_terminal(session, "TC-9", "Acme", "S-1")
    session.commit()
    terminal = session.exec(select(Terminal).where(Terminal.serial == "TC-9")).one()
    store = session.get(Store, terminal.store_id)
    credential = session.exec(select(Credential).where(Credential.username == "TC-9")).one()
    assert store is not None and store.code == "S-1"
    assert (credential.kind, credential.terminal_id) == ("terminal", terminal.id)
    assert secret not in (credential.secret_hash, credential.salt)
    [account] = provisioning.active_accounts(session)
    assert (account.username, account.kind) == ("TC-9", AccountKind.TERMINAL)


@pytest.mark.parametrize("serial", ["", "has space", "a/b", "+", "x" * 65])
def test_provisioning_refuses_bad_serials(session: Session, serial: str) -> None:
    with pytest.raises(ProvisioningError, match="invalid terminal serial"):
        provisioning.provision_terminal(session, serial, "Acme")


def test_provisioning_refuses_duplicates_and_name_clashes(session: Session) -> None:
    provisioning.provision_terminal(session, "TC-9", "Acme")
    provisioning.ensure_service_account(session, AccountKind.INGEST, "tms-ingest")
    session.commit()
    with pytest.raises(ProvisioningError, match="already exists"):
        provisioning.provision_terminal(session, "TC-9", "Acme")
    with pytest.raises(ProvisioningError, match="already exists"):
        provisioning.provision_terminal(session, "tms-ingest", "Acme")
    with pytest.raises(ProvisioningError, match="already exists as a terminal"):
        provisioning.ensure_service_account(session, AccountKind.CONSOLE, "TC-9")
    with pytest.raises(ProvisioningError):
        provisioning.ensure_service_account(session, AccountKind.TERMINAL, "x")
    # A support script's name is a level of its request topics.
    with pytest.raises(ProvisioningError, match="invalid support-script account name"):
        provisioning.ensure_service_account(session, AccountKind.SUPPORT_SCRIPT, "ops@example")
    assert provisioning.ensure_service_account(session, AccountKind.SUPPORT_SCRIPT, "ops.example")


def test_service_account_is_rotated_and_revoked_ones_are_not_loaded(session: Session) -> None:
    first = provisioning.ensure_service_account(session, AccountKind.INGEST, "tms-ingest")
    second = provisioning.ensure_service_account(session, AccountKind.INGEST, "tms-ingest")
    provisioning.provision_terminal(session, "TC-9", "Acme")
    provisioning.revoke(session, "TC-9")
    session.commit()
    assert first != second
    assert [a.username for a in provisioning.active_accounts(session)] == ["tms-ingest"]


def test_unknown_amqtt_version_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import amqtt

    from broker.amqtt_broker import check_amqtt_version

    monkeypatch.setattr(amqtt, "__version__", "9.9.9")
    with pytest.raises(BrokerError, match="written for amqtt 0.12.1"):
        check_amqtt_version()


def test_service_fails_when_mosquitto_dies(database_url: str, work_dir: Path) -> None:
    settings = BrokerSettings(port=free_port())
    stop, ready = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            run_broker_service(settings, database_url, work_dir / "broker", stop, ready)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(60)
        [mosquitto] = _mosquittos_in(work_dir)
        mosquitto.kill()
        thread.join(60)
        assert not thread.is_alive()
        assert len(failures) == 1 and isinstance(failures[0], MosquittoError)
        assert "stopped unexpectedly" in str(failures[0])
    finally:
        stop.set()
        thread.join(10)


def test_tms_broker_serves_and_stops_on_sigterm(database_url: str, work_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "TMS_DATABASE_URL": database_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "tms", "broker", "--data-dir", str(work_dir), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def listening() -> bool:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            return port_accepts("127.0.0.1", port)

        wait_until(listening, f"tms broker to listen on port {port}", timeout=60)
        assert _mosquittos_in(work_dir), "something else answers on the broker's port"
        address = SimpleNamespace(host="127.0.0.1", port=port)
        assert not MqttProbe(address, None, None).connect()  # up, and refusing anonymous
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert _mosquittos_in(work_dir) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_terminal_add_prints_the_secret_once(database_url: str) -> None:
    runner = CliRunner()
    env = {"TMS_DATABASE_URL": database_url}
    result = runner.invoke(main, ["terminal", "add", "TC-7", "--customer", "Acme"], env=env)
    assert result.exit_code == 0, result.output
    assert "MQTT username: TC-7" in result.output
    secret = result.output.split("MQTT secret:", 1)[1].split()[0]
    assert len(secret) >= 40
    assert "will not be shown again" in result.output
    again = runner.invoke(main, ["terminal", "add", "TC-7", "--customer", "Acme"], env=env)
    assert again.exit_code == 1
    assert "already exists" in again.output
