"""Terminal and account lifecycle: the `tms` commands, the audit trail, and live sessions
on both real brokers (revoke, rotate, decommission and swap take effect at once)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner, Result
from sqlmodel import Session, col, select

from broker.cli import broker, certs
from registry import lifecycle
from registry.cli import account, terminal
from registry.lifecycle import Actor
from shared.db import make_engine
from shared.models import AuditEvent, Credential, StatusChange, Store, Terminal
from tests.fixtures.broker import MqttProbe, RunningBroker
from tms.cli import main

pytestmark = pytest.mark.integration

V311 = mqtt.MQTTProtocolVersion.MQTTv311
ADMIN = Actor("test-admin", "127.0.0.1")

# `tms` with the broker's command groups, as tms/cli.py registers them.
tms = type(main)(
    name="tms",
    callback=main.callback,
    params=main.params,
    commands={"terminal": terminal, "account": account, "certs": certs, "broker": broker},
)


@pytest.fixture
def run(database_url: str) -> Callable[..., Result]:
    def invoke(*args: str, input: str | None = None) -> Result:
        env = {"TMS_DATABASE_URL": database_url}
        return CliRunner().invoke(tms, list(args), env=env, input=input)

    return invoke


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _audit(session: Session) -> list[tuple[str, str]]:
    session.expire_all()
    rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
    return [(row.action, row.target) for row in rows]


def test_import_writes_nothing_and_names_every_bad_line(run, session, tmp_path: Path) -> None:
    assert run("terminal", "add", "TC-EXIST", "--customer", "Acme").exit_code == 0
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "serial,customer,store\n"
        "TC-A,Acme,S1\n"
        "bad serial,Acme,S1\n"
        "TC-B,,S2\n"
        "TC-A,Acme,S3\n"
        "TC-EXIST,Acme,S4\n"
    )
    result = run("terminal", "import", str(bad))
    assert result.exit_code == 1
    for line in ("line 3", "line 4", "line 5", "line 6"):
        assert line in result.output
    assert "line 2:" not in result.output
    assert session.exec(select(Terminal.serial)).all() == ["TC-EXIST"]


def test_import_creates_all_terminals_in_one_go(run, session, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("serial,customer,store\nTC-A,Acme,S1\nTC-B,Acme,S2\nTC-C,Other,\n")
    result = run("terminal", "import", str(good))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "serial,secret"
    secrets = dict(line.split(",") for line in lines[1:])
    assert sorted(secrets) == ["TC-A", "TC-B", "TC-C"]
    assert all(len(secret) >= 43 for secret in secrets.values())  # 256 bits, url-safe
    stored = session.exec(select(Credential.secret_hash)).all()
    assert not set(secrets.values()) & set(stored)
    assert ("terminal.imported", "3 terminals") in _audit(session)


def test_support_script_accounts(run, session) -> None:
    result = run("account", "add", "nightly-report", "--role", "support-script")
    assert result.exit_code == 0, result.output
    assert "MQTT secret:" in result.output
    assert run("account", "add", "nightly-report", "--role", "support-script").exit_code == 1
    assert "nightly-report" in run("account", "list").output
    assert run("account", "revoke", "nightly-report").exit_code == 0
    assert "revoked" in run("account", "list").output
    assert ("account.added", "nightly-report") in _audit(session)
    assert ("account.revoked", "nightly-report") in _audit(session)


def test_swap_moves_the_store_slot(run, session) -> None:
    assert run("terminal", "add", "TC-OLD", "--customer", "Acme", "--store", "S9").exit_code == 0
    result = run("terminal", "swap", "TC-OLD", "TC-NEW")
    assert result.exit_code == 0, result.output
    assert "MQTT secret:" in result.output
    session.expire_all()
    old = session.exec(select(Terminal).where(Terminal.serial == "TC-OLD")).one()
    new = session.exec(select(Terminal).where(Terminal.serial == "TC-NEW")).one()
    store = session.get(Store, new.store_id)
    assert store is not None and store.code == "S9"
    assert new.customer_id == old.customer_id
    assert old.status == "decommissioned" and old.decommissioned_at is not None
    credential = session.exec(select(Credential).where(Credential.username == "TC-OLD")).one()
    assert credential.revoked_at is not None
    assert ("terminal.swapped", "TC-OLD") in _audit(session)
    assert run("terminal", "rotate", "TC-OLD").exit_code == 1  # decommissioned stays so


def _live(broker: RunningBroker, serial: str) -> tuple[MqttProbe, str]:
    secret = broker.provision_terminal(serial)
    probe = MqttProbe.terminal(broker, serial, secret, protocol=V311)
    assert probe.connect()
    return probe, secret


def _apply(broker: RunningBroker, change: Callable[[Session], object]) -> object:
    with Session(broker.engine) as session:
        result = change(session)
        session.commit()
    broker.wait_reloaded()
    return result


def test_revoke_drops_the_live_session(any_broker: RunningBroker) -> None:
    probe, secret = _live(any_broker, "TC-1")
    _apply(any_broker, lambda s: lifecycle.revoke_terminal(s, ADMIN, "TC-1"))
    assert probe.disconnected.wait(60), f"{any_broker.kind}: revoked terminal still connected"
    assert not MqttProbe.terminal(any_broker, "TC-1", secret, protocol=V311).connect()
    # Offline with the reason at once, not when the missed-heartbeat sweep notices.
    _assert_offline(any_broker, "TC-1", "access revoked")


def _assert_offline(broker: RunningBroker, serial: str, reason: str) -> None:
    with Session(broker.engine) as session:
        terminal = session.exec(select(Terminal).where(Terminal.serial == serial)).one()
        assert (terminal.status, terminal.status_reason) == ("offline", reason)
        change = session.exec(
            select(StatusChange).where(StatusChange.terminal_id == terminal.id)
        ).one()
        assert (change.new_status, change.reason) == ("offline", reason)


def test_rotate_drops_the_old_secret_and_its_session(any_broker: RunningBroker) -> None:
    probe, old = _live(any_broker, "TC-1")
    bystander, _ = _live(any_broker, "TC-2")
    new = _apply(any_broker, lambda s: lifecycle.rotate_terminal(s, ADMIN, "TC-1"))
    assert isinstance(new, str)
    assert probe.disconnected.wait(60), f"{any_broker.kind}: old-secret session survived"
    assert not MqttProbe.terminal(any_broker, "TC-1", old, protocol=V311).connect()
    assert MqttProbe.terminal(any_broker, "TC-1", new, protocol=V311).connect()
    assert bystander.connected.is_set()
    _assert_offline(any_broker, "TC-1", "secret rotated")


def test_decommission_drops_the_session_and_records_it(any_broker: RunningBroker) -> None:
    probe, _ = _live(any_broker, "TC-1")
    _apply(any_broker, lambda s: lifecycle.decommission_terminal(s, ADMIN, "TC-1", "broken"))
    assert probe.disconnected.wait(60)
    with Session(any_broker.engine) as session:
        terminal = session.exec(select(Terminal).where(Terminal.serial == "TC-1")).one()
        assert terminal.status == "decommissioned" and terminal.decommissioned_at is not None
        assert ("terminal.decommissioned", "TC-1") in _audit(session)


def test_swap_replacement_logs_in_and_old_is_dropped(any_broker: RunningBroker) -> None:
    probe, _ = _live(any_broker, "TC-1")
    secret = _apply(any_broker, lambda s: lifecycle.swap_terminal(s, ADMIN, "TC-1", "TC-9"))
    assert isinstance(secret, str)
    assert probe.disconnected.wait(60)
    assert MqttProbe.terminal(any_broker, "TC-9", secret, protocol=V311).connect()


def test_certs_init_refuses_to_replace_a_ca(run, tmp_path: Path) -> None:
    result = run("certs", "init", "--data-dir", str(tmp_path), "--host", "broker.example")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "certs" / "ca.pem").exists()
    assert oct((tmp_path / "certs" / "ca.key").stat().st_mode & 0o777) == "0o600"
    again = run("certs", "init", "--data-dir", str(tmp_path))
    assert again.exit_code == 1 and "--force" in again.output


def test_group_is_click() -> None:
    assert isinstance(tms, click.Group)


def test_mosquitto_config_for_an_operator_run_broker(run) -> None:
    assert run("terminal", "add", "TC-1", "--customer", "Acme").exit_code == 0
    work = Path(tempfile.mkdtemp(prefix="tms-test-mqconf-"))
    work.chmod(0o755)  # reachable by the mosquitto user when run as root
    out = work / "mq"
    result = run("broker", "mosquitto-config", "--out", str(out), "--port", "1999")
    assert result.exit_code == 0, result.output
    assert "listener 1999 127.0.0.1" in (out / "mosquitto.conf").read_text()
    assert (out / "passwords").read_text().startswith("TC-1:$6$")
    assert "pattern write tms/v1/%u/telemetry" in (out / "acl").read_text()
    shutil.rmtree(work)
