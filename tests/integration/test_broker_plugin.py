"""What the TMS Mosquitto plugin adds: brute-force throttle, client ids, and reloads.

Client-id rules run on both brokers (amqtt applies the same ``broker.acl`` rule);
the throttle tests drive Mosquitto with the plugin, as `tms broker` runs it.
"""

from __future__ import annotations

import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from broker.auth_plugin import read_stats
from broker.mosquitto import MosquittoFiles
from shared import topics
from shared.models import AccountKind
from tests.fixtures.broker import MqttProbe, RunningBroker, running_broker
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

V311 = mqtt.MQTTProtocolVersion.MQTTv311
# Fast enough for a test, the same shape as the defaults (5 / 10 / 300 s).
FAST_THROTTLE: dict[str, Any] = {
    "login_delay_after": 2,
    "login_lockout_after": 4,
    "login_lockout_s": 60,
    "login_delay_step_s": 0.05,
    "login_delay_max_s": 0.1,
}


def _files(broker: RunningBroker) -> MosquittoFiles:
    return MosquittoFiles(broker.directory / "broker")


def _stat(broker: RunningBroker, name: str) -> int:
    """The plugin's counter as last written (the file is written each second)."""
    return read_stats(_files(broker).plugin_stats).get(name, 0)


def _wait_stat(broker: RunningBroker, name: str, at_least: int = 1) -> int:
    """The plugin's counter, once its file says it has reached ``at_least``."""
    return wait_until(
        lambda: (value := _stat(broker, name)) >= at_least and value,
        f"the plugin's {name} counter to reach {at_least}",
    )


def _log_says(broker: RunningBroker, line: str) -> bool:
    return line in _files(broker).log.read_text()


def _guess(broker: RunningBroker, client_id: str = "TC-1") -> bool:
    return MqttProbe(broker, "TC-1", "guess", client_id=client_id, protocol=V311).connect()


def test_a_terminal_must_use_its_serial_as_client_id(any_broker: RunningBroker) -> None:
    secret = any_broker.provision_terminal("TC-1")
    assert not MqttProbe(any_broker, "TC-1", secret, client_id="TC-1-x", protocol=V311).connect()
    assert MqttProbe.terminal(any_broker, "TC-1", secret, protocol=V311).connect()


def test_a_valid_login_with_another_terminals_client_id_changes_nothing(
    any_broker: RunningBroker,
) -> None:
    secret = any_broker.provision_terminal("TC-1")
    victim = MqttProbe.terminal(any_broker, "TC-1", secret, protocol=V311)
    assert victim.connect() and victim.subscribe(topics.command_filter("TC-1"))
    other_secret = any_broker.provision_terminal("TC-2")
    support_secret = any_broker.service_account(AccountKind.SUPPORT_SCRIPT, "support-1")
    # Each would take over TC-1's session if the broker let it log in.
    assert not MqttProbe(
        any_broker, "TC-2", other_secret, client_id="TC-1", protocol=V311
    ).connect()
    assert not MqttProbe(
        any_broker, "support-1", support_secret, client_id="TC-1", protocol=V311
    ).connect()
    assert MqttProbe(
        any_broker, "support-1", support_secret, client_id="support-x", protocol=V311
    ).connect()
    console_secret = any_broker.service_account(AccountKind.CONSOLE, "tms-console")
    console = MqttProbe(any_broker, "tms-console", console_secret, protocol=V311)
    assert console.connect() and console.publish(topics.command("TC-1", "c1"), b"reboot")
    assert victim.next_message().topic == "tms/v1/TC-1/cmd/c1"
    assert victim.connected.is_set()


def test_repeated_failures_are_slowed_then_locked_out(database_url: str) -> None:
    # A window long enough that the next login surely comes within it on a busy machine.
    settings: dict[str, Any] = {
        **FAST_THROTTLE,
        "login_delay_step_s": 3.0,
        "login_delay_max_s": 3.0,
    }
    with running_broker("mosquitto", database_url, **settings) as broker:
        secret = broker.provision_terminal("TC-1")
        assert not _guess(broker) and not _guess(broker)
        # Slowed: for a while even the right secret is not checked.
        assert not MqttProbe.terminal(broker, "TC-1", secret, protocol=V311).connect()
        _wait_stat(broker, "slowed")
        # Once the window has passed it is (a slowed refusal does not extend the window).
        wait_until(
            lambda: MqttProbe.terminal(broker, "TC-1", secret, protocol=V311).connect(),
            "the right secret to be accepted after the slow-down window",
            interval=0.5,  # each try is a connection
        )


def test_lockout_is_logged_counted_and_spares_the_connected_terminal(database_url: str) -> None:
    with running_broker("mosquitto", database_url, **FAST_THROTTLE) as broker:
        secret = broker.provision_terminal("TC-1")
        terminal = MqttProbe.terminal(broker, "TC-1", secret, protocol=V311)
        assert terminal.connect() and terminal.subscribe(topics.command_filter("TC-1"))

        def locked_out() -> bool:
            assert not _guess(broker)  # a stranger with the terminal's client id
            time.sleep(0.15)  # past the slow-down window, so each guess is checked
            return _stat(broker, "lockouts") >= 1

        wait_until(locked_out, "a lockout")
        # Locked out: the right secret from that client id and address is refused too.
        assert not MqttProbe.terminal(broker, "TC-1", secret, protocol=V311).connect()
        _wait_stat(broker, "refused_locked")
        wait_until(
            lambda: (
                _log_says(broker, "too many failed logins for client id TC-1")
                and _log_says(broker, "too many failed logins for address 127.0.0.1")
            ),
            "the lockouts of the client id and the address in Mosquitto's log",
        )
        # A reload re-checks every session; a lockout must not end a connected one.
        broker.provision_terminal("TC-2")
        _wait_stat(broker, "reloads")
        assert terminal.connected.is_set() and not terminal.disconnected.is_set()


def test_revoke_still_ends_a_live_session_through_the_plugin(database_url: str) -> None:
    with running_broker("mosquitto", database_url, **FAST_THROTTLE) as broker:
        secret = broker.provision_terminal("TC-1")
        terminal = MqttProbe.terminal(broker, "TC-1", secret, protocol=V311)
        assert terminal.connect()
        for _ in range(4):  # the address is locked out as well: revoke must still work
            _guess(broker, client_id="stranger")
            time.sleep(0.15)
        broker.revoke("TC-1")
        assert terminal.disconnected.wait(60), "the revoked terminal is still connected"
