"""``tms agent`` / ``tms simulate`` start-up checks and the fleet credentials file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import agent_credentials
from agent.errors import AgentError
from agent.sim.fleet_file import load_fleet_file, parse_fleet_file, write_fleet_file
from shared.settings import AgentSettings, MqttClientSettings, load_settings
from tms.cli import main


def settings_with(**agent: object) -> AgentSettings:
    return AgentSettings.model_validate(agent)


def test_credentials_need_a_serial() -> None:
    with pytest.raises(AgentError, match="TMS_AGENT_SERIAL"):
        agent_credentials(settings_with(mqtt={"password": "s"}))


def test_credentials_need_a_secret() -> None:
    with pytest.raises(AgentError, match="TMS_AGENT_MQTT_PASSWORD"):
        agent_credentials(settings_with(serial="TC200-1"))


def test_username_defaults_to_serial_and_must_match_it() -> None:
    assert agent_credentials(settings_with(serial="TC200-1", mqtt={"password": "s"})) == (
        "TC200-1",
        "s",
    )
    with pytest.raises(AgentError, match="must equal"):
        agent_credentials(
            settings_with(serial="TC200-1", mqtt={"username": "other", "password": "s"})
        )


def test_agent_command_reports_missing_settings_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nserial = "TC200-9"\n')
    result = CliRunner().invoke(main, ["agent", "--config", str(config)], env={})
    assert result.exit_code == 1
    assert "no MQTT secret for terminal TC200-9" in result.output


def test_fleet_file_round_trip_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "fleet" / "credentials.json"
    write_fleet_file(path, [("TC200-1", "s1"), ("TC200-2", "s2")], MqttClientSettings(port=1999))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fleet = load_fleet_file(path)
    assert fleet.credentials() == [("TC200-1", "s1"), ("TC200-2", "s2")]
    assert fleet.mqtt_settings().port == 1999


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({"terminals": [{"serial": "bad/serial", "secret": "x"}]}, "terminals.0.serial"),
        ({"terminals": [{"serial": "T1"}]}, "terminals.0.secret"),
        ({"mqtt": {"host": "h"}}, "terminals"),
        (
            {"terminals": [{"serial": "T1", "secret": "a"}, {"serial": "T1", "secret": "b"}]},
            "more than once",
        ),
    ],
)
def test_bad_fleet_files_are_explained(document: dict[str, object], complaint: str) -> None:
    with pytest.raises(AgentError, match=complaint):
        parse_fleet_file(json.dumps(document))


def test_bad_fleet_file_error_never_quotes_a_secret() -> None:
    document = {"terminals": [{"serial": "bad/serial", "secret": "hunter2"}]}
    with pytest.raises(AgentError) as caught:
        parse_fleet_file(json.dumps(document))
    assert "hunter2" not in str(caught.value)


def test_missing_fleet_file_says_who_writes_it(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="tms up"):
        load_fleet_file(tmp_path / "absent.json")


def test_simulate_refuses_more_terminals_than_provisioned(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    write_fleet_file(path, [("TC200-1", "s1")], MqttClientSettings())
    result = CliRunner().invoke(
        main, ["simulate", "--terminals", "5", "--credentials-file", str(path)], env={}
    )
    assert result.exit_code == 1
    assert "fewer than --terminals 5" in result.output


def test_new_agent_settings_load_from_environment() -> None:
    settings = load_settings(
        env={"TMS_AGENT_STATUS_POLL_INTERVAL_S": "0.5", "TMS_SIMULATE_FAULT_RATE": "0.01"}
    )
    assert settings.agent.status_poll_interval_s == 0.5
    assert settings.simulate.fault_rate == 0.01
