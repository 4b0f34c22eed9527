"""A regional Mosquitto's bridge to the core broker, rendered as Mosquitto config lines.

Pure: what the bridge relays is read off the bridge account's grants (``broker.acl``), so
the regional side never relays what the core would refuse it, and a topic added to the
terminals' grants is relayed without a second list to keep in step.
"""

from __future__ import annotations

from pathlib import Path

from broker.acl import GRANTS, Access
from shared.models import AccountKind
from shared.settings import BridgeSettings

# QoS 1 both ways: a terminal's QoS 1 message is acknowledged by the regional broker,
# which keeps it for the bridge's persistent session until the core has it.
BRIDGE_QOS = 1


def relayed_topics() -> list[tuple[str, str]]:
    """(filter, direction): terminals' messages go ``out`` to the core, commands come ``in``."""
    direction = {Access.PUBLISH: "out", Access.SUBSCRIBE: "in"}
    return [(g.topic_filter, direction[g.access]) for g in GRANTS[AccountKind.BRIDGE]]


def bridge_lines(bridge: BridgeSettings, cafile: Path) -> list[str]:
    """The ``connection`` block for ``bridge``, its CA read from ``cafile`` (a copy that
    Mosquitto's user can read); nothing when no bridge is set."""
    if bridge.address is None:
        return []
    assert bridge.username is not None and bridge.password is not None  # settings check
    lines = [
        f"connection {bridge.name}",
        f"address {bridge.address}",
        # TLS always, the core's certificate checked against its CA and its name.
        f"bridge_cafile {cafile}",
        "bridge_insecure false",
        "bridge_tls_version tlsv1.2",
        "bridge_protocol_version mqttv311",
        f"remote_username {bridge.username}",
        f"remote_password {bridge.password.get_secret_value()}",
        # The core's plugin lets a client id that names an account be used by that
        # account alone: the bridge's is its own username.
        f"remote_clientid {bridge.username}",
        # A persistent session on the core: commands for this region wait there while the
        # bridge is down, and what the region queued goes up once it is back.
        "cleansession false",
        # Tells a Mosquitto core that this is a bridge, so it does not send a relayed
        # message back down the same connection.
        "try_private true",
        # Notifications would publish on $SYS/..., which the core's ACL refuses.
        "notifications false",
        "start_type automatic",
        # Reconnects back off from 2 s to 30 s instead of hammering a core that restarts.
        "restart_timeout 2 30",
        f"keepalive_interval {bridge.keepalive_s}",
    ]
    lines += [f"topic {topic} {way} {BRIDGE_QOS}" for topic, way in relayed_topics()]
    return lines
