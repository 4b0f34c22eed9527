"""Settings: defaults, TOML file, TMS_* variables, and clear errors."""

from pathlib import Path

import pytest

from shared.errors import SettingsError
from shared.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_hold_no_secrets() -> None:
    settings = load_settings(env={})
    assert settings.database.url is None
    assert settings.console.secret_key is None
    assert settings.ingest.mqtt.password is None
    assert settings.broker.kind == "mosquitto"


def test_shipped_config_file_loads() -> None:
    settings = load_settings(REPO / "config" / "tms.toml", env={})
    assert settings.broker.port == 1883
    assert settings.console.port == 8000
    # The file repeats the defaults: a copy of it changes nothing until edited.
    assert settings.commands == type(settings.commands)()


def test_environment_overrides_file(tmp_path: Path) -> None:
    config = tmp_path / "tms.toml"
    config.write_text('[console]\nport = 9000\n[ingest.mqtt]\nusername = "from-file"\n')
    settings = load_settings(
        config,
        env={"TMS_CONSOLE_PORT": "9100", "TMS_DATABASE_URL": "postgresql://u:p@h/d"},
    )
    assert settings.console.port == 9100
    assert settings.ingest.mqtt.username == "from-file"
    assert settings.database.url is not None
    assert settings.database.url.get_secret_value() == "postgresql://u:p@h/d"
    assert "u:p" not in repr(settings)


def test_nested_mqtt_settings_come_from_the_environment() -> None:
    settings = load_settings(env={"TMS_INGEST_MQTT_PORT": "8883", "TMS_DATA_DIR": "/srv/tms"})
    assert settings.ingest.mqtt.port == 8883
    assert settings.paths.data_dir == Path("/srv/tms")


def test_settings_are_frozen() -> None:
    settings = load_settings(env={})
    with pytest.raises(ValueError):
        settings.console.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TMS_CONSOLE_PORT": "http"}, "TMS_CONSOLE_PORT"),
        ({"TMS_BROKER_PORT": "70000"}, "[broker] port"),
        ({"TMS_BROKER_KIND": "rabbitmq"}, "TMS_BROKER_KIND"),
        ({"TMS_INGEST_MQTT_PORT": "0"}, "TMS_INGEST_MQTT_PORT"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(env=env)


def test_unknown_keys_and_bad_toml_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "tms.toml"
    config.write_text("[console]\nprot = 1\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings(config, env={})
    config.write_text("[console\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(config, env={})
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.toml", env={})
