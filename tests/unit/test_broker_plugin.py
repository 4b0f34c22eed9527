"""Pure parts of the Mosquitto plugin's support: client-id and $share rules, its files."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.acl import client_id_allowed, may_join_shared_group
from broker.auth_plugin import PluginOptions, read_stats, render_accounts_file
from registry.provisioning import BrokerAccount
from shared.credentials import hash_secret
from shared.models import AccountKind
from shared.settings import BrokerSettings

ACCOUNTS = {"TC-1", "TC-2", "tms-ingest", "support-1"}
T, ING, SUP = AccountKind.TERMINAL, AccountKind.INGEST, AccountKind.SUPPORT_SCRIPT


@pytest.mark.parametrize(
    ("kind", "username", "client_id", "allowed"),
    [
        (T, "TC-1", "TC-1", True),
        (T, "TC-1", "TC-1-x", False),  # a terminal's client id is its serial
        (T, "TC-1", "TC-2", False),  # would take over TC-2's session
        (T, "TC-1", "", False),
        (T, "TC-1", None, False),
        (SUP, "support-1", "support-1", True),
        (SUP, "support-1", "support-script-7", True),
        (SUP, "support-1", "TC-1", False),  # names another account
        (SUP, "support-1", "tms-ingest", False),
        (SUP, "support-1", "", True),  # the broker assigns a fresh one
        (ING, "tms-ingest", "tms-ingest-2", True),
    ],
)
def test_client_id_allowed(
    kind: AccountKind, username: str, client_id: str | None, allowed: bool
) -> None:
    assert client_id_allowed(kind, username, client_id, ACCOUNTS.__contains__) is allowed


def test_only_ingest_joins_shared_groups() -> None:
    assert [k for k in AccountKind if may_join_shared_group(k)] == [AccountKind.INGEST]


def test_accounts_file_carries_kind_and_share_flag() -> None:
    accounts = [
        BrokerAccount("TC-1", T, hash_secret("a")),
        BrokerAccount("tms-ingest", ING, hash_secret("b")),
        BrokerAccount("support-1", SUP, hash_secret("c")),
    ]
    lines = render_accounts_file(accounts).splitlines()
    assert lines[1:] == ["TC-1 terminal 0", "tms-ingest ingest 1", "support-1 support-script 0"]


def test_read_stats(tmp_path: Path) -> None:
    stats = tmp_path / "tms_auth.stats"
    assert read_stats(stats) == {}
    stats.write_text("failures 3\nlockouts 1\nbroken\n")
    assert read_stats(stats) == {"failures": 3, "lockouts": 1}


def test_plugin_options_from_settings() -> None:
    options = PluginOptions.from_settings(BrokerSettings(login_delay_step_s=0.25))
    assert (options.delay_after, options.lockout_after, options.lockout_s) == (5, 10, 300)
    assert (options.delay_step_ms, options.delay_max_ms, options.window_s) == (250, 5000, 60)


def test_the_session_queue_limit_reaches_mosquittos_configuration(tmp_path: Path) -> None:
    from broker.mosquitto import MosquittoFiles, PluginConfig, render_config

    plugin = PluginConfig(tmp_path / "tms_auth.so", PluginOptions.from_settings(BrokerSettings()))
    files = MosquittoFiles(tmp_path)
    default = render_config("127.0.0.1", 1883, files, plugin).splitlines()
    assert "max_queued_messages 1000000" in default
    limit = BrokerSettings(max_queued_messages=250_000).max_queued_messages
    lines = render_config("127.0.0.1", 1883, files, plugin, None, limit).splitlines()
    assert "max_queued_messages 250000" in lines
    assert "max_inflight_messages 20000" in lines


def test_mosquitto_saves_its_state_every_autosave_s(tmp_path: Path) -> None:
    from broker.mosquitto import MosquittoFiles, PluginConfig, render_config

    plugin = PluginConfig(tmp_path / "tms_auth.so", PluginOptions.from_settings(BrokerSettings()))
    files = MosquittoFiles(tmp_path)
    default = render_config("127.0.0.1", 1883, files, plugin).splitlines()
    assert "persistence true" in default
    assert f"autosave_interval {BrokerSettings().autosave_s}" in default
    # In seconds: autosave_on_changes would turn the interval into a count of changes.
    assert not [line for line in default if line.startswith("autosave_on_changes")]
    lines = render_config(
        "127.0.0.1", 1883, files, plugin, autosave_s=BrokerSettings(autosave_s=7).autosave_s
    ).splitlines()
    assert "autosave_interval 7" in lines


def test_the_plugin_is_told_which_topics_may_be_retained(tmp_path: Path) -> None:
    from broker.acl import RETAINABLE_FILTERS
    from broker.auth_plugin import config_lines

    options = PluginOptions.from_settings(BrokerSettings())
    lines = config_lines(
        tmp_path / "p.so", tmp_path / "pw", tmp_path / "acc", tmp_path / "s", options
    )
    assert [line for line in lines if "retain" in line] == [
        f"plugin_opt_retain_filter {f}" for f in RETAINABLE_FILTERS
    ]
