"""``tms check``: is this configuration ready to run, and are its database and broker there?

One line per check (ok, warn, FAIL, skip) saying what is wrong and what to do; exit 1
when anything failed. The verdicts are pure (``tms/check_rules.py``,
``check_service_rules.py``, ``check_file_rules.py``); this module gathers the facts
(``tms/check_probes.py``) in the order a person would fix them.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from shared.errors import TMSError
from shared.settings import Settings
from tms.check_file_rules import (
    ca_file_verdict,
    directory_verdict,
    signing_key_verdict,
    tls_verdicts,
)
from tms.check_probes import (
    database_connect_error,
    dir_facts,
    file_mode,
    listeners_on,
    mqtt_login,
    port_state,
    read_file,
    tcp_error,
)
from tms.check_rules import (
    Verdict,
    config_file_verdict,
    console_key_verdict,
    exit_status,
    exposure_verdicts,
    fail,
    ok,
    placeholder_verdicts,
    report_json,
    secrets_file_verdict,
    secrets_in_file,
    skip,
    summary,
    validate_settings,
    warn,
)
from tms.check_service_rules import (
    DatabaseTarget,
    PortState,
    broker_reach_verdict,
    classify_connect_error,
    database_verdicts,
    mqtt_login_verdict,
    port_verdict,
    schema_verdict,
)

Say = Callable[[str], None]


def _overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """The TMS_* variables as a settings tree, exactly as shared.settings reads them."""
    from shared.settings import ENV_PREFIX, _env_overrides, _merge  # one reading of the env

    found: dict[str, Any] = {}
    if "TMS_DATA_DIR" in env:
        found["paths"] = {"data_dir": env["TMS_DATA_DIR"]}
    for section, field in Settings.model_fields.items():
        assert isinstance(field.annotation, type)
        nested = _env_overrides(field.annotation, env, f"{ENV_PREFIX}{section.upper()}_")
        if nested:
            found = _merge(found, {section: nested})
    return found


def load_checked_settings(
    config_file: Path | None, env: Mapping[str, str]
) -> tuple[Settings | None, list[Verdict]]:
    """The settings, and every problem of the file and the variables, not only the first."""
    from shared.settings import _merge

    raw: dict[str, Any] = {}
    verdicts: list[Verdict] = []
    if config_file is not None:
        try:
            raw = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, [fail("config", f"{config_file} not found: check --config / TMS_CONFIG")]
        except OSError as exc:
            return None, [fail("config", f"cannot read {config_file}: {exc.strerror}")]
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            return None, [fail("config", f"{config_file} is not valid TOML ({exc}): correct it")]
        mode = file_mode(config_file) or 0
        verdicts.append(config_file_verdict(str(config_file), mode, secrets_in_file(raw)))
    overrides = _overrides(env)
    file = str(config_file) if config_file else None
    settings, found = validate_settings(_merge(raw, overrides), overrides, file)
    return settings, found + verdicts


def _alert_rules(settings: Settings, env: Mapping[str, str]) -> Verdict:
    from ingest.alerts.config import load_alert_config

    path = settings.alerts.rules_file
    try:
        load_alert_config(path, env)
    except TMSError as exc:
        return fail("alert rules", f"{exc}; check [alerts] rules_file (TMS_ALERTS_RULES_FILE)")
    return ok("alert rules", f"{path} is valid" if path else "the built-in defaults")


def _stored_console_key(data_dir: Path) -> bool:
    facts = read_file(data_dir / "secrets.json")
    try:
        stored = json.loads(facts.data or b"{}")
    except ValueError:
        return False
    return isinstance(stored, dict) and isinstance(stored.get("console_secret_key"), str)


def _password_of(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def secret_checks(settings: Settings, data_dir: Path) -> list[Verdict]:
    s = settings
    embedded = s.database.url is None
    secrets_path = data_dir / "secrets.json"
    mode = file_mode(secrets_path)
    verdicts = [secrets_file_verdict(secrets_path, mode)] if embedded or mode is not None else []
    key = s.console.secret_key.get_secret_value() if s.console.secret_key else None
    verdicts.append(console_key_verdict(key, embedded, _stored_console_key(data_dir)))

    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    url = secret(s.database.url)
    passwords = {
        "TMS_DATABASE_URL's password": _password_of(url) if url else None,
        "TMS_INGEST_MQTT_PASSWORD": secret(s.ingest.mqtt.password),
        "TMS_CONSOLE_MQTT_PASSWORD": secret(s.console.mqtt.password),
        "TMS_AGENT_MQTT_PASSWORD": secret(s.agent.mqtt.password),
        "TMS_NOTIFY_SMTP_PASSWORD": secret(s.notify.smtp_password),
    }
    return verdicts + placeholder_verdicts(passwords) + exposure_verdicts(s)


def _database(url: str, setting: str, timeout: float) -> list[Verdict]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from shared import schema
    from shared.db import database_error_message, sqlalchemy_url

    try:
        parsed = make_url(sqlalchemy_url(url))
    except (TMSError, ArgumentError, ValueError) as exc:
        return [fail("database", f"{setting} is not usable ({exc}): correct it")]
    target = DatabaseTarget(
        where=f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432}",
        user=parsed.username or "?",
        name=parsed.database or "?",
        setting=setting,
    )
    error = database_connect_error(url, timeout)
    failure = classify_connect_error(error, target.user, target.name) if error else None
    verdicts = database_verdicts(target, failure, error or "")
    if failure is not None:
        return [*verdicts, skip("schema", "not checked: no session on the database")]
    from alembic.script import ScriptDirectory

    revisions = [
        r.revision for r in ScriptDirectory.from_config(schema.alembic_config(url)).walk_revisions()
    ]
    try:
        current = schema.current_revision(url)
    except SQLAlchemyError as exc:
        reason = database_error_message(exc, url) or str(exc).splitlines()[0]
        return [*verdicts, fail("schema", reason)]
    return [*verdicts, schema_verdict(current, revisions)]


def database_checks(settings: Settings, data_dir: Path, timeout: float, say: Say) -> list[Verdict]:
    from tms.platform_database import platform_database

    if settings.database.url is not None:
        url = settings.database.url.get_secret_value()
        return _database(url, "TMS_DATABASE_URL ([database] url)", timeout)
    made = (data_dir / "secrets.json").exists() or (data_dir / "postgres" / "data").exists()
    if not made:
        return [
            warn(
                "database",
                f"no platform in {data_dir} yet: `tms up --data-dir {data_dir}` makes its "
                "database; or set TMS_DATABASE_URL",
            )
        ]
    setting = f"the platform's database in {data_dir} (its password is in secrets.json)"
    try:
        with platform_database(data_dir, open_stopped=True, say=say) as url:
            return _database(url, setting, timeout)
    except TMSError as exc:
        return [fail("database", str(exc))]


def _connect_host(host: str) -> str:
    # A listener on every address is reached on this host's loopback.
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def broker_checks(settings: Settings, timeout: float) -> list[Verdict]:
    broker = settings.broker
    host = _connect_host(broker.host)
    error = tcp_error(host, broker.port, timeout)
    verdicts = [broker_reach_verdict(host, broker.port, error)]
    embedded = settings.database.url is None
    for service, mqtt in (("ingest", settings.ingest.mqtt), ("console", settings.console.mqtt)):
        if not mqtt.username or mqtt.password is None:
            verdicts.append(mqtt_login_verdict(service, mqtt, None, embedded))
        elif error is not None and (_connect_host(mqtt.host), mqtt.port) == (host, broker.port):
            verdicts.append(skip(f"{service} MQTT login", "not checked: the broker is unreachable"))
        else:
            client_id = f"tms-check-{os.getpid()}-{service}"
            result = mqtt_login(mqtt, client_id, timeout)
            verdicts.append(mqtt_login_verdict(service, mqtt, result, embedded))
    return verdicts


def tls_checks(settings: Settings, data_dir: Path, now: datetime) -> list[Verdict]:
    from broker.certs import TlsFiles

    files = TlsFiles(settings.broker.certs_dir or data_dir / "certs")
    verdicts = tls_verdicts(
        files.directory,
        read_file(files.ca_cert),
        read_file(files.server_cert),
        read_file(files.server_key),
        now,
    )
    client_cas = {
        "[ingest.mqtt] tls_ca": settings.ingest.mqtt.tls_ca,
        "[console.mqtt] tls_ca": settings.console.mqtt.tls_ca,
        "[agent.mqtt] tls_ca": settings.agent.mqtt.tls_ca,
        "[agent] firmware_tls_ca": settings.agent.firmware_tls_ca,
    }
    for setting, path in client_cas.items():
        if path is not None:
            verdicts.append(ca_file_verdict(setting, read_file(path), now))
    return verdicts


def port_checks(settings: Settings, data_dir: Path) -> list[Verdict]:
    from broker.certs import TlsFiles

    s = settings
    wanted = [
        ("broker", s.broker.host, s.broker.port, "[broker] port (TMS_BROKER_PORT, --broker-port)"),
        (
            "console",
            s.console.host,
            s.console.port,
            "[console] port (TMS_CONSOLE_PORT, --console-port)",
        ),
    ]
    if s.ingest.metrics_port:
        setting = "[ingest] metrics_port (TMS_INGEST_METRICS_PORT, --metrics-port)"
        wanted.append(("metrics", s.ingest.metrics_host, s.ingest.metrics_port, setting))
    if TlsFiles(s.broker.certs_dir or data_dir / "certs").server_ready():
        setting = "[broker] tls_port (TMS_BROKER_TLS_PORT)"
        wanted.append(("broker TLS", s.broker.tls_host, s.broker.tls_port, setting))
    if s.database.url is None:
        setting = "[database] port (TMS_DATABASE_PORT, --db-port)"
        wanted.append(("PostgreSQL", "127.0.0.1", s.database.port, setting))
    verdicts = []
    for what, host, port, setting in wanted:
        state, detail = port_state(host, port)
        listeners = listeners_on(port) if state is PortState.IN_USE else []
        verdicts.append(port_verdict(what, host, port, setting, state, detail, listeners, data_dir))
    return verdicts


def firmware_checks(settings: Settings, data_dir: Path) -> list[Verdict]:
    from rollouts.errors import FirmwareError
    from rollouts.library import read_signing_key

    key = settings.firmware.signing_key_in(data_dir)
    mode = file_mode(key)
    problem = None
    if mode is not None:
        try:
            read_signing_key(key)
        except FirmwareError as exc:
            problem = str(exc)
    store = settings.firmware.store_dir_in(data_dir)
    setting = "[firmware] store_dir (TMS_FIRMWARE_STORE_DIR)"
    return [
        signing_key_verdict(key, mode, problem),
        directory_verdict("firmware store", dir_facts(store), setting, as_root=False),
    ]


def run_checks(
    config_file: Path | None,
    data_dir: Path | None,
    env: Mapping[str, str],
    timeout: float,
    say: Say,
) -> list[Verdict]:
    """Every check, in the order a person would fix what they find."""
    settings, verdicts = load_checked_settings(config_file, env)
    if settings is None:
        return [*verdicts, skip("the rest", "needs a valid configuration: fix it first")]
    if data_dir is not None:
        paths = settings.paths.model_copy(update={"data_dir": data_dir.expanduser().absolute()})
        settings = settings.model_copy(update={"paths": paths})
    home = settings.paths.data_dir
    now = datetime.now(UTC)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    verdicts.append(_alert_rules(settings, env))
    verdicts.append(
        directory_verdict("data dir", dir_facts(home), "--data-dir (TMS_DATA_DIR)", as_root)
    )
    verdicts += secret_checks(settings, home)
    verdicts += database_checks(settings, home, timeout, say)
    verdicts += broker_checks(settings, timeout)
    verdicts += tls_checks(settings, home, now)
    verdicts += port_checks(settings, home)
    verdicts += firmware_checks(settings, home)
    return verdicts


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The TOML configuration to check (default: tms --config, TMS_CONFIG, or none).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The platform's data directory (default: tms --data-dir, TMS_DATA_DIR, as tms up).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.5, 120),
    default=5.0,
    show_default=True,
    help="Seconds each connection may take.",
)
@click.pass_context
def check(
    ctx: click.Context,
    config_file: Path | None,
    data_dir: Path | None,
    as_json: bool,
    timeout: float,
) -> None:
    """Check the configuration, data directory, database, broker, TLS files, ports,
    firmware key and secrets; say what is wrong and what to do. Exit 1 on any FAIL."""
    root = ctx.find_root().params
    verdicts = run_checks(
        config_file or root.get("config_file"),
        data_dir or root.get("data_dir"),
        os.environ,
        timeout,
        say=lambda line: click.echo(line, err=True),
    )
    if as_json:
        click.echo(report_json(verdicts))
    else:
        for verdict in verdicts:
            click.echo(verdict.line())
        click.echo(summary(verdicts))
    ctx.exit(exit_status(verdicts))
