"""``tms ingest`` refuses to start without its broker account, saying which variables to set."""

from __future__ import annotations

from click.testing import CliRunner

from tms.cli import main


def test_ingest_refuses_to_start_without_mqtt_credentials() -> None:
    env = {"TMS_DATABASE_URL": "postgresql://tms@127.0.0.1:1/tms", "TMS_CONFIG": ""}
    result = CliRunner().invoke(main, ["ingest"], env=env)
    assert result.exit_code == 1
    assert "TMS_INGEST_MQTT_USERNAME" in result.output
    assert "TMS_INGEST_MQTT_PASSWORD" in result.output


def test_ingest_refuses_a_username_without_password() -> None:
    env = {"TMS_INGEST_MQTT_USERNAME": "tms-ingest", "TMS_CONFIG": ""}
    result = CliRunner().invoke(main, ["ingest"], env=env)
    assert result.exit_code == 1
    assert "TMS_INGEST_MQTT_PASSWORD" in result.output
