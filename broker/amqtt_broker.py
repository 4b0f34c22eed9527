"""amqtt 0.12.1 with its measured defects worked around from outside (see MEASURED.md).

``GuardedBroker`` changes the one step where amqtt takes a CONNECT in: it
authenticates the CONNECT (through the auth plugins) and checks its will topic
*before* the client's existing session is looked at, so a stranger using a
terminal's client id with a wrong secret is answered "not authorised" and the
terminal's session, subscriptions and connection stay as they were. amqtt itself
cleans the session first and authenticates afterwards.

``WatchedHandler`` enforces the keepalive that amqtt ignores: a connection silent
for 1.5x its keepalive is closed as a network failure, so its last will is sent.

Two limits Mosquitto applies in its own way are added here: each connection's reader
is a ``LimitedReader`` (``[broker] max_packet_bytes``: an over-size packet ends the
connection before it is read), and a PUBLISH or will with the retain flag outside
``broker.acl.RETAINABLE_FILTERS`` is refused. amqtt's topic plugins are asked with the
topic alone, so the retain flag is looked at where the broker takes the message in.

And a leak is closed: at every CONNECT amqtt hands the client the retained messages
matching *any* filter any session subscribed to, unchecked, so a terminal connecting
after ingest subscribed to ``tms/v1/+/status`` got every terminal's presence. Retained
messages now go only to a session subscribed to the filter, as a subscription brings.

The code below mirrors amqtt 0.12.1's private ``_initialize_client_session``; the
service refuses other amqtt versions rather than guess at their internals.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import amqtt
from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker, BrokerConfig
from amqtt.contexts import Action as AmqttAction
from amqtt.contexts import ListenerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session as AmqttSession
from amqtt.utils import gen_client_id

from broker.acl import may_retain
from broker.errors import BrokerError
from broker.packet_limit import LimitedReader

log = logging.getLogger(__name__)

SUPPORTED_AMQTT = "0.12.1"
KEEPALIVE_FACTOR = 1.5  # MQTT 3.1.1 section 3.1.2.10: one and a half keepalive periods
TAKEOVER_WAIT_S = 2.0


def check_amqtt_version() -> None:
    if amqtt.__version__ != SUPPORTED_AMQTT:
        raise BrokerError(
            f"amqtt {amqtt.__version__} is installed but TMS's workarounds are written for "
            f"amqtt {SUPPORTED_AMQTT}: install that version (pip install amqtt=={SUPPORTED_AMQTT})"
        )


class WatchedHandler(BrokerProtocolHandler):
    """amqtt's handler, but a read timeout (no packet for 1.5x keepalive) ends the connection."""

    def handle_read_timeout(self) -> None:
        client_id = self.session.client_id if self.session else None
        log.info("client %s silent for 1.5x its keepalive: closing its connection", client_id)
        if self.writer is not None:
            # The reader loop then sees end-of-stream and reports an abnormal disconnect,
            # which is what makes the broker publish the last will.
            asyncio.ensure_future(self.writer.close())


class GuardedBroker(Broker):
    """An amqtt Broker that authenticates a CONNECT before touching any session."""

    def __init__(self, config: dict[str, Any] | BrokerConfig, max_packet_bytes: int) -> None:
        super().__init__(config)
        self.max_packet_bytes = max_packet_bytes

    async def _client_connected(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        peer = writer.get_peer_info()
        where = f"{peer[0]}:{peer[1]}" if peer else "an unknown address"
        limited = LimitedReader(reader, self.max_packet_bytes, where)
        await super()._client_connected(listener_name, limited, writer)

    async def _handle_message_delivery(
        self,
        client_session: AmqttSession,
        handler: BrokerProtocolHandler,
        wait_deliver: asyncio.Future[Any],
    ) -> bool:
        message = wait_deliver.result()
        if message is not None and message.retain and not may_retain(message.topic):
            # As a publish on a forbidden topic: acknowledged (3.1.1 cannot say no),
            # neither delivered nor kept, and the client stays connected.
            log.info(
                "%s may not retain a message on %s: dropped",
                client_session.client_id,
                message.topic,
            )
            return True
        return await super()._handle_message_delivery(client_session, handler, wait_deliver)

    async def _refuse(self, writer: WriterAdapter, session: AmqttSession, why: str) -> None:
        log.warning(
            "CONNECT refused (%s): client id %r, user %r, from %s",
            why,
            session.client_id,
            session.username,
            session.remote_address,
        )
        connack = ConnackPacket.build(0, NOT_AUTHORIZED)
        try:
            await connack.to_stream(writer)
        finally:
            await writer.close()
        raise AMQTTError(f"CONNECT refused: {why}")

    async def _will_allowed(self, session: AmqttSession) -> bool:
        if not session.will_flag or session.will_topic is None:
            return True
        if session.will_retain and not may_retain(session.will_topic):
            return False
        return await self._topic_filtering(session, session.will_topic, AmqttAction.PUBLISH)

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, AmqttSession]:
        try:
            handler, incoming = await WatchedHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        except MQTTError:
            await writer.close()
            raise
        # The guard: nothing below runs for a CONNECT that does not authenticate.
        if not await Broker._authenticate(self, incoming, ListenerConfig()):
            await self._refuse(writer, incoming, "bad username or secret")
        if not await self._will_allowed(incoming):
            await self._refuse(
                writer, incoming, f"will on {incoming.will_topic!r} not allowed (topic or retain)"
            )

        client_id = incoming.client_id
        existing = self._sessions.get(client_id) if client_id else None
        if existing is not None and existing[0].transitions.is_connected():
            # The account's owner takes over: drop the old connection as Mosquitto does,
            # instead of leaving it running unattached to any session.
            old_session, old_handler = existing
            log.info("client %s connected again: closing its previous connection", client_id)
            await self.disconnect_session(old_session, old_handler)

        client_session = incoming
        if incoming.clean_session:
            if client_id:
                await self._delete_session(client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
        elif existing is not None:
            client_session = existing[0]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive"):
                setattr(client_session, name, getattr(incoming, name))
            client_session.username = incoming.username
            client_session.password = incoming.password
            client_session.parent = 1
        else:
            incoming.parent = 0
        if client_session.keep_alive > 0:
            client_session.keep_alive = math.ceil(client_session.keep_alive * KEEPALIVE_FACTOR)
        return handler, client_session

    async def _authenticate(self, session: AmqttSession, _: ListenerConfig) -> bool:
        # Already done in _initialize_client_session, before the session was touched;
        # counting it twice would double the brute-force counters.
        return True

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: AmqttSession
    ) -> None:
        topic_filter = subscription[0]
        subscribers = self._subscriptions.get(topic_filter, [])
        if not any(subscriber.client_id == session.client_id for subscriber, _ in subscribers):
            return  # a filter of someone else's, which amqtt offers every new connection
        await super()._publish_retained_messages_for_subscription(subscription, session)

    def connected_sessions(self) -> list[tuple[AmqttSession, BrokerProtocolHandler]]:
        return [
            (session, handler)
            for session, handler in self._sessions.values()
            if session.transitions.is_connected()
        ]

    async def disconnect_session(self, session: AmqttSession, handler: Any) -> None:
        """Close a live connection at once; its last will is sent as for a network failure."""
        await handler.handle_connection_closed()
        await handler.stop()
        # The connection's own loop marks the session disconnected; wait for it, so a
        # session taken over is not marked disconnected after its new connection began.
        deadline = asyncio.get_running_loop().time() + TAKEOVER_WAIT_S
        while session.transitions.is_connected() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
