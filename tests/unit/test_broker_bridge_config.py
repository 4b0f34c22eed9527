"""The bridge block `tms broker` writes for a regional Mosquitto: TLS, its own account,
a persistent session, and exactly the topics the core lets a bridge account use."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from broker.acl import Access, is_allowed
from broker.bridge import bridge_lines, relayed_topics
from shared.models import AccountKind
from shared.settings import BridgeSettings

pytestmark = pytest.mark.unit

CA = Path("/var/lib/tms/broker/bridge-ca.pem")


def settings(**over: object) -> BridgeSettings:
    values: dict[str, object] = {
        "address": "core.example.net:8883",
        "cafile": Path("/etc/tms/core-ca.pem"),
        "username": "bridge-eu",
        "password": SecretStr("s3cret"),
        "name": "eu",
    }
    return BridgeSettings(**{**values, **over})  # type: ignore[arg-type]


def test_no_address_no_bridge() -> None:
    assert bridge_lines(BridgeSettings(), CA) == []


def test_the_block_names_the_core_its_ca_and_the_bridge_account() -> None:
    lines = bridge_lines(settings(), CA)
    assert lines[0] == "connection eu"  # the block starts here and runs to the end
    for wanted in (
        "address core.example.net:8883",
        f"bridge_cafile {CA}",
        "bridge_insecure false",
        "remote_username bridge-eu",
        "remote_password s3cret",
        "remote_clientid bridge-eu",
        "cleansession false",
        "notifications false",
    ):
        assert wanted in lines


def test_up_goes_what_terminals_publish_and_down_their_commands() -> None:
    topic_lines = [line for line in bridge_lines(settings(), CA) if line.startswith("topic ")]
    assert sorted(topic_lines) == sorted(
        [
            "topic tms/v1/+/telemetry out 1",
            "topic tms/v1/+/status out 1",
            "topic tms/v1/+/event out 1",
            "topic tms/v1/+/cmd-result/+ out 1",
            "topic tms/v1/+/cmd/+ in 1",
        ]
    )


def test_every_relayed_topic_is_one_the_core_allows_the_bridge() -> None:
    for topic_filter, way in relayed_topics():
        example = topic_filter.replace("+", "TC1")
        if way == "out":
            assert is_allowed(AccountKind.BRIDGE, "bridge-eu", Access.PUBLISH, example)
        else:
            assert is_allowed(AccountKind.BRIDGE, "bridge-eu", Access.SUBSCRIBE, topic_filter)


@pytest.mark.parametrize("missing", ["cafile", "username", "password"])
def test_a_bridge_without_tls_or_its_account_is_refused(missing: str) -> None:
    with pytest.raises(ValidationError, match=missing):
        settings(**{missing: None})


@pytest.mark.parametrize("address", ["core", "core:88830", "core:8883 extra", "a b:1", ":8883"])
def test_a_malformed_address_is_refused(address: str) -> None:
    with pytest.raises(ValidationError):
        settings(address=address)
