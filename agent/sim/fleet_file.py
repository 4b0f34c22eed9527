"""The fleet credentials file ``tms simulate`` reads and the provisioner (``tms up``) writes.

JSON: ``{"terminals": [{"serial": ..., "secret": ...}], "mqtt": {"host": ..., "port": ...}}``
(``mqtt.tls_ca`` optional). It holds broker secrets, so it is written owner-only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

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


class FleetFile(_FileModel):
    terminals: list[FleetTerminal]
    mqtt: FleetBroker = FleetBroker()

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
    return parse_fleet_file(text, str(path))


def write_fleet_file(
    path: Path, terminals: Iterable[tuple[str, str]], mqtt: MqttClientSettings
) -> None:
    """Write the file atomically, readable by its owner only (it holds secrets)."""
    document = {
        "terminals": [{"serial": serial, "secret": secret} for serial, secret in terminals],
        "mqtt": {"host": mqtt.host, "port": mqtt.port}
        | ({"tls_ca": str(mqtt.tls_ca)} if mqtt.tls_ca is not None else {}),
    }
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
