"""The verdicts of ``tms check`` (one line each: ok, warn, FAIL or skip) and those on the
configuration and its secrets.

Pure: each function takes what the command found (a parsed file, a pydantic error, a
file's mode) and returns ``Verdict``s saying what is wrong and what to do. The command
(``tms/check.py``) does the looking; ``check_service_rules`` and ``check_file_rules``
hold the verdicts on the services and on files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from shared.settings import ENV_PREFIX, Settings

# The keys whose values are secrets: never echoed in a message.
SECRET_FIELDS = frozenset({"url", "password", "secret_key", "smtp_password"})
# Values copied from the examples in config/tms.toml and the docs, or guessed first.
PLACEHOLDERS = frozenset(
    {"", "...", "secret", "password", "changeme", "change-me", "admin", "tms", "test", "xxx"}
)
# The console refuses shorter keys (console/app.py MIN_SECRET_KEY_LENGTH).
MIN_CONSOLE_KEY = 16
KEYS_DOC = "config/tms.toml documents every key"


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"  # not checked: it depends on something that failed, or is not ours


@dataclass(frozen=True, slots=True)
class Verdict:
    check: str
    status: Status
    message: str

    def line(self) -> str:
        return f"{self.status.value:<4} {self.check}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status.value.lower(), "message": self.message}


def ok(check: str, message: str) -> Verdict:
    return Verdict(check, Status.OK, message)


def warn(check: str, message: str) -> Verdict:
    return Verdict(check, Status.WARN, message)


def fail(check: str, message: str) -> Verdict:
    return Verdict(check, Status.FAIL, message)


def skip(check: str, message: str) -> Verdict:
    return Verdict(check, Status.SKIP, message)


def exit_status(verdicts: Iterable[Verdict]) -> int:
    """1 when anything failed; warnings and skipped checks leave it at 0."""
    return 1 if any(v.status is Status.FAIL for v in verdicts) else 0


def summary(verdicts: Sequence[Verdict]) -> str:
    failed = sum(v.status is Status.FAIL for v in verdicts)
    warned = sum(v.status is Status.WARN for v in verdicts)
    if failed:
        return f"{failed} check(s) failed, {warned} warning(s): fix the FAIL lines first"
    return f"all checks passed ({warned} warning(s))"


def report_json(verdicts: Sequence[Verdict]) -> str:
    return json.dumps(
        {
            "ok": exit_status(verdicts) == 0,
            "failed": sum(v.status is Status.FAIL for v in verdicts),
            "warnings": sum(v.status is Status.WARN for v in verdicts),
            "checks": [v.to_json() for v in verdicts],
        },
        indent=1,
    )


# -- the configuration ------------------------------------------------------------------


def _field_path(loc: Sequence[Any]) -> tuple[list[str], list[Any]]:
    """Split a pydantic location into the settings keys it names (the last may be an
    unknown key) and what follows them (a list index, a union member)."""
    model: type[BaseModel] | None = Settings
    names: list[str] = []
    for index, part in enumerate(loc):
        if model is None or not isinstance(part, str):
            return names, list(loc[index:])
        names.append(part)
        field = model.model_fields.get(part)
        if field is None:
            return names, list(loc[index + 1 :])
        annotation = field.annotation
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_model and isinstance(annotation, type) else None
    return names, []


def env_name(names: Sequence[str]) -> str:
    if list(names) == ["paths", "data_dir"]:
        return "TMS_DATA_DIR"
    return ENV_PREFIX + "_".join(names).upper()


def key_name(names: Sequence[str]) -> str:
    if len(names) == 1:
        return f"section [{names[0]}]"
    return f"[{'.'.join(names[:-1])}] {names[-1]}"


def _in(tree: Mapping[str, Any], names: Sequence[str]) -> bool:
    node: Any = tree
    for name in names:
        if not isinstance(node, Mapping) or name not in node:
            return False
        node = node[name]
    return True


def describe_setting_error(
    error: Mapping[str, Any], env_overrides: Mapping[str, Any], file: str | None
) -> str:
    """One line for one pydantic error: which key, from where, why, and what to do."""
    names, rest = _field_path(tuple(error["loc"]))
    key = key_name(names) + "".join(f"[{part}]" for part in rest if isinstance(part, int))
    from_env = _in(env_overrides, names)
    source = env_name(names) if from_env else (file or "the defaults")
    if error["type"] == "extra_forbidden":
        what = key if len(names) == 1 else f"key {key}"
        return f"unknown {what} in {source}: remove it or correct its spelling ({KEYS_DOC})"
    reason = str(error["msg"]).removeprefix("Value error, ")
    value = "" if SECRET_FIELDS & set(names) else f" = {error.get('input')!r}"
    fix = f"correct {env_name(names)}" if from_env else f"correct it in {source} ({KEYS_DOC})"
    return f"bad value for {key}{value} in {source}: {reason}; {fix}"


def validate_settings(
    raw: Mapping[str, Any], env_overrides: Mapping[str, Any], file: str | None
) -> tuple[Settings | None, list[Verdict]]:
    """The settings from the file's contents and the TMS_* overrides (already merged into
    ``raw``), and one verdict per bad key, not only the first."""
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        return None, [
            fail("config", describe_setting_error(e, env_overrides, file)) for e in exc.errors()
        ]
    count = sum(1 for _ in _leaves(env_overrides))
    where = file or "no configuration file (defaults)"
    return settings, [ok("config", f"{where} and {count} TMS_* variable(s) are valid")]


def _leaves(tree: Mapping[str, Any]) -> Iterable[Any]:
    for value in tree.values():
        if isinstance(value, Mapping):
            yield from _leaves(value)
        else:
            yield value


# -- secrets ---------------------------------------------------------------------------


def secrets_in_file(raw: Mapping[str, Any]) -> list[str]:
    """The keys of a parsed configuration file that hold secrets."""
    found: list[str] = []

    def walk(node: Mapping[str, Any], path: list[str]) -> None:
        for name, value in node.items():
            if isinstance(value, Mapping):
                walk(value, [*path, name])
            # A database URL is a secret only with a password in it.
            elif name in SECRET_FIELDS and value and (name != "url" or _has_password(value)):
                found.append(key_name([*path, name]))

    walk(raw, [])
    return found


def _has_password(url: Any) -> bool:
    try:
        return isinstance(url, str) and bool(urlsplit(url).password)
    except ValueError:  # a malformed URL: it may still hold one
        return True


def config_file_verdict(file: str, mode: int, secret_keys: Sequence[str]) -> Verdict:
    if secret_keys and mode & 0o077:
        return fail(
            "config file",
            f"{file} holds secrets ({', '.join(secret_keys)}) and other users may read it "
            f"(mode {mode & 0o777:04o}): chmod 600 {file}, or move them to TMS_* variables",
        )
    if secret_keys:
        return ok("config file", f"{file} holds secrets and only its owner may read it")
    return ok("config file", f"{file} holds no secrets")


def secrets_file_verdict(path: Path, mode: int | None) -> Verdict:
    if mode is None:
        return ok("secrets", f"{path} not made yet: `tms up` makes it (owner-only) on first start")
    if mode & 0o077:
        return fail(
            "secrets",
            f"{path} (database password, console key) may be read by other users "
            f"(mode {mode & 0o777:04o}): chmod 600 {path}",
        )
    return ok("secrets", f"{path} is readable by its owner only")


def console_key_verdict(key: str | None, embedded: bool, stored: bool) -> Verdict:
    """The console's session key: set and strong, or made by `tms up`."""
    name = "console secret key"
    hint = "e.g. to the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
    if key is None:
        if embedded:
            made = "kept in secrets.json" if stored else "made on its first start"
            return ok(name, f"not set: `tms up` gives the console its own ({made})")
        return fail(
            name,
            f"not set: the console refuses to start; set TMS_CONSOLE_SECRET_KEY {hint}",
        )
    if key.strip().lower() in PLACEHOLDERS:
        return fail(name, f"TMS_CONSOLE_SECRET_KEY is a placeholder: set it {hint}")
    if len(key) < MIN_CONSOLE_KEY:
        return fail(
            name,
            f"TMS_CONSOLE_SECRET_KEY is {len(key)} characters; the console needs at least "
            f"{MIN_CONSOLE_KEY}: set it {hint}",
        )
    return ok(name, "set, and long enough")


def placeholder_verdicts(passwords: Mapping[str, str | None]) -> list[Verdict]:
    """A FAIL for each password (named by its variable) left at an example or guessable
    value; one ok line when there is none."""
    found = [
        fail(
            "passwords",
            f"{variable} is a placeholder ({value!r} is in every example): set the real secret",
        )
        for variable, value in passwords.items()
        if value is not None and value.strip().lower() in PLACEHOLDERS
    ]
    given = sum(value is not None for value in passwords.values())
    if found:
        return found
    if not given:
        return [ok("passwords", "none is set in the configuration or TMS_* variables")]
    return [ok("passwords", f"none of the {given} password(s) set is a placeholder")]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_verdicts(settings: Settings) -> list[Verdict]:
    """Warnings for what is fine on a laptop and wrong on a network."""
    found: list[Verdict] = []
    console, broker = settings.console, settings.broker
    if not is_loopback(console.host) and not console.cookie_secure:
        found.append(
            warn(
                "exposure",
                f"the console listens on {console.host} with cookie_secure off: serve it over "
                "HTTPS (a TLS proxy) and set TMS_CONSOLE_COOKIE_SECURE=true",
            )
        )
    if not is_loopback(broker.host):
        found.append(
            warn(
                "exposure",
                f"plain MQTT listens on {broker.host}:{broker.port}: passwords cross the "
                "network in clear; keep [broker] host on 127.0.0.1 and give terminals TLS "
                f"({broker.tls_port})",
            )
        )
    return found
