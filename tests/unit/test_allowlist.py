"""Which peer addresses the console's IP allowlist lets in (console.allowlist, and the
setting that feeds it)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from console.allowlist import address_allowed
from shared.errors import SettingsError
from shared.settings import load_settings

pytestmark = pytest.mark.unit

OFFICE = [ip_network("10.20.0.0/16"), ip_network("2001:db8::/32")]


def test_an_empty_list_lets_everyone_in() -> None:
    assert address_allowed("203.0.113.9", [])
    assert address_allowed(None, [])


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.20.3.4", True),
        ("10.21.0.1", False),
        ("2001:db8::7", True),
        ("2001:db9::7", False),
        ("::ffff:10.20.3.4", True),  # an IPv4 peer on a dual-stack socket
        ("::ffff:10.21.3.4", False),
        ("fe80::1%eth0", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
        ("10.20.3.4.5", False),
    ],
)
def test_only_addresses_inside_a_listed_network_are_let_in(
    address: str | None, allowed: bool
) -> None:
    assert address_allowed(address, OFFICE) is allowed


def test_the_setting_takes_a_comma_or_space_separated_list_from_the_environment() -> None:
    settings = load_settings(env={"TMS_CONSOLE_ALLOWED_NETWORKS": "10.20.0.0/16, 127.0.0.1 ::1"})
    assert [str(net) for net in settings.console.allowed_networks] == [
        "10.20.0.0/16",
        "127.0.0.1/32",
        "::1/128",
    ]
    assert load_settings(env={}).console.allowed_networks == ()


def test_a_bad_network_is_refused_with_the_variable_named() -> None:
    with pytest.raises(SettingsError, match="TMS_CONSOLE_ALLOWED_NETWORKS.*10.0.0.300"):
        load_settings(env={"TMS_CONSOLE_ALLOWED_NETWORKS": "10.0.0.300/8"})
