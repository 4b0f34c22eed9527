"""The broker side of ingest: the aiomqtt client it uses and manual acknowledgement.

aiomqtt 2.x has no public API for manual acknowledgement (empicano/aiomqtt#345), so the
two calls on its private paho client live here and nowhere else. Both run on the event
loop thread, where aiomqtt drives paho's socket.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiomqtt

from shared.settings import IngestSettings


@dataclass(frozen=True, slots=True)
class Receipt:
    """What acknowledging one message needs: the connection it came on, its id and QoS."""

    connection: int
    mid: int
    qos: int


def make_client(settings: IngestSettings) -> aiomqtt.Client:
    """A persistent-session client with manual acknowledgement switched on.

    clean_session=False and a fixed client id make the broker keep the subscription and
    every unacknowledged message while ingest is away, and send them again on return.
    """
    mqtt = settings.mqtt
    tls = aiomqtt.TLSParameters(ca_certs=str(mqtt.tls_ca)) if mqtt.tls_ca is not None else None
    client = aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password is not None else None,
        identifier=settings.client_id,
        clean_session=False,
        keepalive=mqtt.keepalive_s,
        tls_params=tls,
    )
    enable_manual_ack(client)
    return client


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Stop paho from acknowledging on receipt; must run before connecting.

    Private API: aiomqtt has no manual-ack option yet (empicano/aiomqtt#345).
    """
    client._client.manual_ack_set(True)  # noqa: SLF001


def acknowledge(client: aiomqtt.Client, mid: int, qos: int) -> bool:
    """Send the PUBACK for one message, only after its batch is committed.

    Private API: aiomqtt has no public ack yet (empicano/aiomqtt#345). Returns False when
    the connection is gone (the broker then redelivers the message).
    """
    if qos == 0:
        return True
    return client._client.ack(mid, qos) == 0  # noqa: SLF001
