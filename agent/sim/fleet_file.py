"""The fleet credentials file ``tms simulate`` reads and the provisioner (``tms up``) writes.

JSON: ``{"terminals": [{"serial": ..., "secret": ...}], "mqtt": {"host": ..., "port": ...}}``
(``mqtt.tls_ca`` optional). It holds broker secrets, so it is written owner-only.

An optional ``"firmware"`` section lets the simulated agents take ``firmware`` commands:
``public_key`` (the platform's PEM public key file), ``directory`` (each terminal
downloads into ``<directory>/<serial>``; default ``firmware`` beside the file),
``boot_wait_s``, ``read_timeout_s`` and ``tls_ca`` (for an https console). Relative
paths in it are relative to the file's directory. Without it, firmware commands fail
saying the agent takes no firmware, as a real agent without a public key does.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agent.errors import AgentError
from shared.settings import MqttClientSettings
from shared.topics import SERIAL_PATTERN


class _FileModel(BaseModel):
    # Unknown keys are ignored so a newer provisioner can add some.
    model_config = ConfigDict(frozen=True, extra="ignore")


class FleetTerminal(_FileModel):
    serial: str = Field(pattern=rf"^{SERIAL_PATTERN}$")
    secret: SecretStr = Field(min_length=1)


class FleetBroker(_FileModel):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls_ca: Path | None = None


# A simulated TC-200 is off the bus for half a second when it boots: a few seconds is
# plenty, and a test of a failed boot does not wait the real agent's two minutes.
FLEET_BOOT_WAIT_S = 5.0


class FleetFirmware(_FileModel):
    """What the simulated agents need for firmware updates (the ``firmware`` section)."""

    public_key: Path
    directory: Path | None = None
    boot_wait_s: float = Field(default=FLEET_BOOT_WAIT_S, gt=0, le=3600)
    read_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    tls_ca: Path | None = None

    def anchored(self, base: Path) -> FleetFirmware:
        """Relative paths made relative to ``base``; the directory defaults to base/firmware."""
        return self.model_copy(
            update={
                "public_key": base / self.public_key,
                "directory": base / (self.directory or "firmware"),
                "tls_ca": None if self.tls_ca is None else base / self.tls_ca,
            }
        )


class FleetFile(_FileModel):
    terminals: list[FleetTerminal]
    mqtt: FleetBroker = FleetBroker()
    firmware: FleetFirmware | None = None

    def mqtt_settings(self) -> MqttClientSettings:
        return MqttClientSettings(host=self.mqtt.host, port=self.mqtt.port, tls_ca=self.mqtt.tls_ca)

    def credentials(self) -> list[tuple[str, str]]:
        return [(t.serial, t.secret.get_secret_value()) for t in self.terminals]


def parse_fleet_file(text: str, source: str = "fleet credentials") -> FleetFile:
    try:
        fleet = FleetFile.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "file"
        # from None: the validation error quotes its input, which may be a secret.
        raise AgentError(
            f"{source} is not a valid fleet credentials file: {where}: {first['msg']}"
        ) from None
    serials = [t.serial for t in fleet.terminals]
    if len(set(serials)) != len(serials):
        raise AgentError(f"{source} lists a terminal serial more than once")
    return fleet


def load_fleet_file(path: Path) -> FleetFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentError(
            f"cannot read the fleet credentials file {path}: {exc.strerror}; "
            "`tms up` writes it after provisioning the simulated terminals"
        ) from exc
    fleet = parse_fleet_file(text, str(path))
    if fleet.firmware is None:
        return fleet
    base = path.parent.absolute()
    return fleet.model_copy(update={"firmware": fleet.firmware.anchored(base)})


def write_fleet_file(
    path: Path,
    terminals: Iterable[tuple[str, str]],
    mqtt: MqttClientSettings,
    firmware: FleetFirmware | None = None,
) -> None:
    """Write the file atomically, readable by its owner only (it holds secrets)."""
    document: dict[str, Any] = {
        "terminals": [{"serial": serial, "secret": secret} for serial, secret in terminals],
        "mqtt": {"host": mqtt.host, "port": mqtt.port}
        | ({"tls_ca": str(mqtt.tls_ca)} if mqtt.tls_ca is not None else {}),
    }
    if firmware is not None:
        document["firmware"] = firmware.model_dump(mode="json", exclude_none=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=1)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
