"""What the simulated fleet is told for firmware updates: the credentials file's firmware
section, each terminal's options made from it, and the signing key `tms up` makes once."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.errors import AgentError
from agent.sim.fleet import build_fleet, firmware_options
from agent.sim.fleet_file import FLEET_BOOT_WAIT_S, FleetFirmware, load_fleet_file, write_fleet_file
from shared.firmware_signature import generate_key, load_public_key, public_key_pem
from shared.settings import MqttClientSettings
from tms.stack import ensure_signing_key

TERMINALS = [("SIM000001", "s1"), ("SIM000002", "s2")]


def _public_key(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(public_key_pem(generate_key()))
    return path


def test_the_firmware_section_round_trips_with_absolute_paths(tmp_path: Path) -> None:
    path = tmp_path / "fleet" / "credentials.json"
    key = _public_key(tmp_path / "keys" / "public.pem")
    firmware = FleetFirmware(public_key=key, directory=tmp_path / "dl", boot_wait_s=2.5)
    write_fleet_file(path, TERMINALS, MqttClientSettings(), firmware)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_fleet_file(path).firmware == firmware.model_copy(update={"tls_ca": None})


def test_relative_paths_are_beside_the_file_and_the_directory_has_a_default(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet" / "credentials.json"
    path.parent.mkdir()
    document = {
        "terminals": [{"serial": "SIM000001", "secret": "s1"}],
        "firmware": {"public_key": "public.pem"},
    }
    path.write_text(json.dumps(document))
    firmware = load_fleet_file(path).firmware
    assert firmware is not None
    assert firmware.public_key == tmp_path / "fleet" / "public.pem"
    assert firmware.directory == tmp_path / "fleet" / "firmware"
    assert firmware.boot_wait_s == FLEET_BOOT_WAIT_S and firmware.tls_ca is None


def test_a_file_without_the_section_gives_no_firmware(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    write_fleet_file(path, TERMINALS, MqttClientSettings())
    assert load_fleet_file(path).firmware is None
    assert "firmware" not in json.loads(path.read_text())


def test_each_terminal_gets_its_own_directory_and_login(tmp_path: Path) -> None:
    key = _public_key(tmp_path / "public.pem")
    options_of = firmware_options(
        FleetFirmware(public_key=key, directory=tmp_path / "dl", read_timeout_s=7)
    )
    one, two = (options_of(serial, secret) for serial, secret in TERMINALS)
    assert (one.directory, two.directory) == (tmp_path / "dl/SIM000001", tmp_path / "dl/SIM000002")
    assert (one.credentials.username, one.credentials.password) == ("SIM000001", "s1")
    assert two.credentials.username == "SIM000002"
    assert one.public_key == key and one.boot_wait_s == FLEET_BOOT_WAIT_S
    assert one.download.read_timeout_s == 7 and one.download.ssl_context is None


@pytest.mark.parametrize("content", [None, b"not a key"])
def test_a_fleet_with_an_unusable_key_does_not_start(tmp_path: Path, content: bytes | None) -> None:
    key = tmp_path / "public.pem"
    if content is not None:
        key.write_bytes(content)
    firmware = FleetFirmware(public_key=key, directory=tmp_path / "dl")
    with pytest.raises(AgentError, match="firmware public key .* is unusable"):
        build_fleet(TERMINALS, MqttClientSettings(), 1.0, firmware=firmware)


def test_a_missing_ca_is_named(tmp_path: Path) -> None:
    firmware = FleetFirmware(
        public_key=_public_key(tmp_path / "public.pem"), tls_ca=tmp_path / "no-ca.pem"
    )
    with pytest.raises(AgentError, match="no-ca.pem"):
        firmware_options(firmware)


def test_tms_up_makes_the_signing_key_once_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "firmware-signing.key"
    public = ensure_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    load_public_key(public)  # a PEM public key, for the agents
    assert ensure_signing_key(path) == public  # kept, not made again


def test_a_key_made_by_tms_firmware_keygen_is_kept(tmp_path: Path) -> None:
    from rollouts.library import write_signing_key
    from shared.firmware_signature import private_key_pem

    key = generate_key()
    path = tmp_path / "firmware-signing.key"
    write_signing_key(path, private_key_pem(key))
    assert ensure_signing_key(path) == public_key_pem(key)
