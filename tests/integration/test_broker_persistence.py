"""Mosquitto saves its state while it runs, not only at a clean exit (issue 13, finding 1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from shared.models import AccountKind
from tests.fixtures.broker import RunningBroker, running_broker
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

AUTOSAVE_S = 1


@pytest.fixture
def saving_broker(database_url: str) -> Iterator[RunningBroker]:
    with running_broker("mosquitto", database_url, autosave_s=AUTOSAVE_S) as broker:
        yield broker


def _saved(broker: RunningBroker) -> bytes:
    database = Path(broker.directory) / "broker" / "data" / "mosquitto.db"
    try:
        return database.read_bytes()
    except FileNotFoundError:
        return b""


def test_a_new_persistent_session_is_on_disk_within_autosave_s(
    saving_broker: RunningBroker,
) -> None:
    secret = saving_broker.service_account(AccountKind.INGEST, "tms-ingest")
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id="tms-ingest",
        protocol=mqtt.MQTTProtocolVersion.MQTTv311,
        clean_session=False,  # as ingest: its queue must outlive a broker crash
    )
    client.username_pw_set("tms-ingest", secret)
    client.connect(saving_broker.host, saving_broker.port, 30)
    client.loop_start()
    try:
        client.subscribe("tms/v1/+/telemetry", qos=1)
        # Mosquitto is still running: only a periodic save can have written the session.
        wait_until(
            lambda: (
                b"tms-ingest" in _saved(saving_broker)
                and b"tms/v1/+/telemetry" in _saved(saving_broker)
            ),
            "ingest's session and subscription in mosquitto.db",
            timeout=AUTOSAVE_S + 30,
        )
    finally:
        client.disconnect()
        client.loop_stop()
