"""The sender's broker connection (paho-mqtt, the console's account): QoS 1 publishes
whose PUBACKs it waits for, and the subscription to support scripts' requests.

paho runs its network loop in its own thread and reconnects by itself; publishing is
thread-safe, so the sender's loop and the request relay share one client.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt

from shared.errors import TMSError
from shared.settings import MqttClientSettings

log = logging.getLogger(__name__)
_LINK_NUMBERS = itertools.count(1)

OnMessage = Callable[[str, bytes, bool], None]  # topic, payload, retained


class MqttLinkError(TMSError):
    pass


class MqttLink:
    def __init__(
        self,
        settings: MqttClientSettings,
        *,
        subscriptions: Sequence[str] = (),
        on_message: OnMessage | None = None,
    ) -> None:
        if not settings.username or settings.password is None:
            raise MqttLinkError(
                "the command sender needs the console's MQTT account: set "
                "TMS_CONSOLE_MQTT_USERNAME and TMS_CONSOLE_MQTT_PASSWORD"
            )
        self.settings = settings
        self._subscriptions = tuple(subscriptions)
        self.on_message = on_message  # may be set after construction, before start()
        self._connected = threading.Event()
        self.refused: str | None = None
        # Not an account's name (the broker keeps those for their owners), and one per
        # link, not per process: two links with one id take each other's connection
        # over, again and again (seen with two senders in one test process).
        client_id = f"tms-commands-{socket.gethostname()[:30]}-{os.getpid()}-{next(_LINK_NUMBERS)}"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self.client.username_pw_set(settings.username, settings.password.get_secret_value())
        if settings.tls_ca is not None:
            self.client.tls_set_context(ssl.create_default_context(cafile=str(settings.tls_ca)))
        self.client.reconnect_delay_set(1, 10)
        # Enough in flight for a whole batch: the broker acknowledges them as they come.
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._connect_done
        self.client.on_connect_fail = self._connect_failed
        self._failures = 0
        self.client.on_disconnect = self._disconnected
        self.client.on_message = self._message

    def start(self) -> None:
        """Connect in the background; ``connected()`` says when it is up."""
        self.client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive_s)
        self.client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    def publish_all(self, messages: Sequence[tuple[str, bytes]], timeout_s: float) -> list[bool]:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + timeout_s
        acked = []
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                acked.append(False)
                continue
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                acked.append(False)  # the connection went while it was queued
                continue
            acked.append(info.is_published())
        return acked

    def _connect_done(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            log.error("the broker refused the sender's connection: %s", reason)
            return
        self.refused = None
        self._failures = 0
        for topic_filter in self._subscriptions:
            client.subscribe(topic_filter, qos=1)
        log.info(
            "connected to the broker %s:%s as %r",
            self.settings.host,
            self.settings.port,
            self.settings.username,
        )
        self._connected.set()

    def _connect_failed(self, _client: mqtt.Client, _userdata: Any) -> None:
        # Said on the first failure and then now and again, not at every retry.
        self._failures += 1
        if self._failures in (1, 10) or self._failures % 100 == 0:
            log.warning(
                "no connection to the broker at %s:%s (attempt %d); retrying",
                self.settings.host,
                self.settings.port,
                self._failures,
            )

    def _disconnected(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if self._connected.is_set():
            log.warning("lost the broker (%s); reconnecting", reason)
        self._connected.clear()

    def _message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.on_message is not None:
            self.on_message(message.topic, bytes(message.payload), bool(message.retain))
