"""The whole loop on real parts: `tms up`, terminals provisioned with the CLI, telemetry
published with a terminal's own credentials, seen in PostgreSQL and through the API."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest

from shared import topics
from shared.messages import DeviceStatus, Metrics, Telemetry
from shared.ports import free_port
from tests.integration.platform import SECRET_RE, Platform, make_data_dir, tms
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    data_dir = make_data_dir()
    running = Platform(data_dir)
    running.start()
    try:
        yield running
    finally:
        code = running.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    assert code == 0, running.text


def _add_terminal(platform: Platform, serial: str) -> str:
    result = tms(
        "terminal",
        "add",
        serial,
        "--customer",
        "Acme Stores",
        "--store",
        "LON-1",
        env=platform.env(),
    )
    assert result.returncode == 0, result.stderr
    secrets = SECRET_RE.findall(result.stdout)
    assert secrets, result.stdout
    return str(secrets[-1])


def _api_token(platform: Platform) -> str:
    result = tms("user", "token", "admin", "--name", "e2e", env=platform.env())
    assert result.returncode == 0, result.stderr
    return str(SECRET_RE.findall(result.stdout)[-1])


def _connect(platform: Platform, username: str, password: str) -> tuple[mqtt.Client, Any]:
    """Connect (retrying while the broker reloads new credentials); return client and rc."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=username or None)
    if username:
        client.username_pw_set(username, password)
    outcome: dict[str, Any] = {}
    client.on_connect = lambda c, u, f, rc, p: outcome.setdefault("rc", rc)
    client.connect("127.0.0.1", platform.broker_port)
    client.loop_start()
    wait_until(lambda: "rc" in outcome, "CONNACK")
    return client, outcome["rc"]


def _connect_when_accepted(platform: Platform, username: str, password: str) -> mqtt.Client:
    def attempt() -> mqtt.Client | None:
        client, rc = _connect(platform, username, password)
        if not rc.is_failure:
            return client
        client.loop_stop()
        client.disconnect()
        return None

    # Each refusal counts as a failed login for the broker's throttle: poll slowly.
    return wait_until(attempt, f"broker to accept {username}", timeout=60, interval=1.0)


def _publish(client: mqtt.Client, topic: str, message: Telemetry) -> None:
    info = client.publish(topic, message.to_payload(), qos=1)
    info.wait_for_publish(30)


def _api_get(platform: Platform, path: str, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(platform.console_url + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_first_start_prints_the_console_and_a_one_time_admin_password(platform: Platform) -> None:
    assert platform.console_url in platform.text
    assert "admin" in platform.text and "shown only this once" in platform.text
    assert "loopback development only" in platform.text


def test_telemetry_flows_from_a_terminal_to_postgresql_and_the_api(platform: Platform) -> None:
    secret_a = _add_terminal(platform, "E2E-A")
    _add_terminal(platform, "E2E-B")
    client = _connect_when_accepted(platform, "E2E-A", secret_a)
    sent = Telemetry(status=DeviceStatus.OK, firmware="3.1.4", terminal=Metrics(cpu=42.5))
    _publish(client, topics.telemetry("E2E-A"), sent)
    client.loop_stop()
    client.disconnect()

    def stored() -> tuple[Any, ...] | None:
        with psycopg.connect(platform.database_url) as conn:
            return conn.execute(
                "SELECT t.firmware_version, t.cpu_pct, t.status FROM terminal t"
                " JOIN telemetry h ON h.terminal_id = t.id"
                " WHERE t.serial = 'E2E-A' AND h.message_id = %s",
                (sent.id,),
            ).fetchone()

    assert wait_until(stored, "telemetry in PostgreSQL", 60) == ("3.1.4", 42.5, "online")

    token = _api_token(platform)
    status, body = _api_get(platform, "/api/v1/terminals", token)
    assert status == 200
    by_serial = {t["serial"]: t for t in body["terminals"]}
    assert by_serial["E2E-A"]["firmware"] == "3.1.4"
    assert by_serial["E2E-A"]["status"] == "online"
    assert by_serial["E2E-B"]["status"] == "unknown"
    assert _api_get(platform, "/api/v1/terminals", None)[0] == 401
    assert _api_get(platform, "/api/v1/terminals", "not-a-token")[0] == 401


def test_a_terminal_cannot_publish_as_another(platform: Platform) -> None:
    secret_c = _add_terminal(platform, "E2E-C")
    secret_d = _add_terminal(platform, "E2E-D")
    intruder = _connect_when_accepted(platform, "E2E-D", secret_d)
    forged = Telemetry(status=DeviceStatus.ERROR, firmware="6.6.6")
    sent = intruder.publish(topics.telemetry("E2E-C"), forged.to_payload(), qos=1)
    # The broker answered it (MQTT 3.1.1: a PUBACK, then drops it): the forgery went out,
    # so what follows tests the broker, not a message that never left the client.
    sent.wait_for_publish(30)
    assert sent.is_published()
    intruder.loop_stop()
    intruder.disconnect()

    # A message the victim really sends afterwards shows ingest has read past the forgery.
    victim = _connect_when_accepted(platform, "E2E-C", secret_c)
    genuine = Telemetry(status=DeviceStatus.OK, firmware="1.0.0")
    _publish(victim, topics.telemetry("E2E-C"), genuine)
    victim.loop_stop()
    victim.disconnect()

    def written_ids() -> set[str]:
        with psycopg.connect(platform.database_url) as conn:
            rows = conn.execute(
                "SELECT h.message_id FROM telemetry h JOIN terminal t ON t.id = h.terminal_id"
                " WHERE t.serial = 'E2E-C'"
            ).fetchall()
        return {row[0] for row in rows}

    ids = wait_until(
        lambda: (found := written_ids()) and genuine.id in found and found,
        "the genuine message",
        60,
    )
    assert forged.id not in ids
    with psycopg.connect(platform.database_url) as conn:
        firmware = conn.execute(
            "SELECT firmware_version FROM terminal WHERE serial = 'E2E-C'"
        ).fetchone()
    assert firmware == ("1.0.0",)


def test_wrong_secret_and_anonymous_logins_are_refused(platform: Platform) -> None:
    _add_terminal(platform, "E2E-E")
    for username, password in (("E2E-E", "wrong-secret"), ("", "")):
        client, rc = _connect(platform, username, password)
        client.loop_stop()
        assert rc.is_failure, username


def test_second_start_keeps_data_and_simulated_fleet_reconnects() -> None:
    data_dir = make_data_dir()
    first = Platform(data_dir, simulate=3)
    try:
        first.start()
        assert "shown only this once" in first.text

        def online() -> int:
            with psycopg.connect(first.database_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM terminal WHERE status = 'online'"
                    " AND serial LIKE 'SIM%%' AND last_heartbeat_at IS NOT NULL"
                ).fetchone()
            return int(row[0]) if row else 0

        wait_until(lambda: online() == 3, "3 simulated terminals online", 60)
        with psycopg.connect(first.database_url) as conn:
            history_before = conn.execute("SELECT count(*) FROM telemetry").fetchone()
        assert first.stop() == 0
        assert "TMS stopped." in first.text
        with socket.socket() as probe:  # PostgreSQL was stopped with the platform
            assert probe.connect_ex(("127.0.0.1", first.db_port)) != 0

        second = Platform(data_dir, simulate=3, db_port=first.db_port)
        second.start()
        try:
            assert "shown only this once" not in second.text
            with psycopg.connect(second.database_url) as conn:
                history_after = conn.execute("SELECT count(*) FROM telemetry").fetchone()
                users = conn.execute("SELECT count(*) FROM user_account").fetchone()
            assert history_before and history_after and history_after[0] >= history_before[0]
            assert users == (1,)
            # The same simulated terminals log in again with their kept credentials.
            with psycopg.connect(second.database_url) as conn:
                conn.execute("UPDATE terminal SET status = 'offline'")
                conn.commit()
            wait_until(lambda: online() == 3, "simulated terminals online after restart", 60)
        finally:
            assert second.stop() == 0
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_port_in_use_is_reported_by_name() -> None:
    data_dir = make_data_dir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = tms(
            "up",
            "--data-dir",
            str(data_dir),
            "--console-port",
            str(port),
            "--db-port",
            str(free_port()),
            "--broker-port",
            str(free_port()),
            timeout=60,
        )
    shutil.rmtree(data_dir, ignore_errors=True)
    assert result.returncode != 0
    assert f"console port 127.0.0.1:{port} is already in use" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_configured_database_url_is_used_instead_of_the_embedded_cluster(
    database_url: str,
) -> None:
    data_dir = make_data_dir()
    running = Platform(data_dir, simulate=2, extra_env={"TMS_DATABASE_URL": database_url})
    try:
        running.start()
        assert "external PostgreSQL" in running.text
        assert not (data_dir / "postgres").exists()

        def simulated_in_that_database() -> int:
            with psycopg.connect(database_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM terminal WHERE serial LIKE 'SIM%%'"
                    " AND last_heartbeat_at IS NOT NULL"
                ).fetchone()
            return int(row[0]) if row else 0

        wait_until(lambda: simulated_in_that_database() == 2, "telemetry in the given database", 60)
    finally:
        assert running.stop() == 0
        shutil.rmtree(data_dir, ignore_errors=True)
    with psycopg.connect(database_url) as conn:  # the server is not ours to stop
        assert conn.execute("SELECT 1").fetchone() == (1,)
