"""The verdicts of ``tms check`` on the services: the database and its schema, the
broker and its logins, and the ports the platform listens on.

Pure: each function takes what the command found (a connect error's text, a CONNACK,
who holds a port) and returns ``Verdict``s saying what is wrong and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from shared.settings import MqttClientSettings
from tms.check_rules import Verdict, fail, ok, skip

# -- the database ----------------------------------------------------------------------


class DatabaseFailure(Enum):
    UNREACHABLE = "unreachable"
    PASSWORD = "password"
    NO_ROLE = "no role"
    NO_DATABASE = "no database"
    OTHER = "other"


_UNREACHABLE = (
    "connection refused",
    "could not connect",
    "timeout expired",
    "timed out",
    "no route to host",
    "could not translate host name",
    "network is unreachable",
)


def classify_connect_error(text: str, user: str, database: str) -> DatabaseFailure:
    """What libpq's connect error says, from its first line (later ones may quote SQL)."""
    lines = text.strip().splitlines()
    first = " ".join(lines[0].split()).lower() if lines else ""
    if "password authentication failed" in first or "no password supplied" in first:
        return DatabaseFailure.PASSWORD
    if f'database "{database.lower()}" does not exist' in first:
        return DatabaseFailure.NO_DATABASE
    if f'role "{user.lower()}" does not exist' in first:
        return DatabaseFailure.NO_ROLE
    if any(words in first for words in _UNREACHABLE):
        return DatabaseFailure.UNREACHABLE
    return DatabaseFailure.OTHER


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    where: str  # "PostgreSQL at host:port"
    user: str
    name: str
    setting: str  # what the person changes: "TMS_DATABASE_URL ([database] url)"


def database_verdicts(
    target: DatabaseTarget, failure: DatabaseFailure | None, detail: str = ""
) -> list[Verdict]:
    """Three lines: the server answers, the login is accepted, the database exists."""
    t = target
    reach, login, exists = "database server", "database login", "database"
    not_checked = "not checked: the step before failed"
    if failure is DatabaseFailure.UNREACHABLE:
        return [
            fail(
                reach,
                f"cannot reach {t.where} ({detail.strip().splitlines()[0] if detail else ''}): "
                f"is it running? check {t.setting}",
            ),
            skip(login, not_checked),
            skip(exists, not_checked),
        ]
    found = [ok(reach, f"{t.where} answers")]
    if failure is DatabaseFailure.PASSWORD:
        return [
            *found,
            fail(login, f"{t.where} refused the password of user {t.user!r}: check {t.setting}"),
            skip(exists, not_checked),
        ]
    if failure is DatabaseFailure.NO_ROLE:
        return [
            *found,
            fail(login, f"{t.where} has no user {t.user!r}: create it, or check {t.setting}"),
            skip(exists, not_checked),
        ]
    if failure is DatabaseFailure.OTHER:
        first = " ".join(detail.strip().splitlines()[0].split())[:300] if detail else ""
        return [
            *found,
            fail(login, f"{t.where}: {first}; check {t.setting}"),
            skip(exists, not_checked),
        ]
    found.append(ok(login, f"user {t.user!r} logged in"))
    if failure is DatabaseFailure.NO_DATABASE:
        return [
            *found,
            fail(
                exists,
                f"{t.where} has no database {t.name!r}: create it (`createdb -O {t.user} "
                f"{t.name}`), then run `tms db upgrade`; or check {t.setting}",
            ),
        ]
    return [*found, ok(exists, f"{t.name!r} exists")]


def schema_verdict(current: str | None, revisions_newest_first: Sequence[str]) -> Verdict:
    """The database's migration against this TMS's newest (a linear history)."""
    head = revisions_newest_first[0]
    if current is None:
        return fail("schema", f"the database has no TMS schema: run `tms db upgrade` (to {head})")
    if current == head:
        return ok("schema", f"at the newest revision, {head}")
    if current not in revisions_newest_first:
        return fail(
            "schema",
            f"the database is at revision {current}, which this TMS does not know (newest "
            f"here: {head}): it was migrated by a newer TMS; run that version",
        )
    behind = revisions_newest_first.index(current)
    return fail(
        "schema",
        f"the database is at revision {current}, {behind} behind {head}: run `tms db upgrade`",
    )


# -- the broker ------------------------------------------------------------------------


def broker_reach_verdict(host: str, port: int, error: str | None) -> Verdict:
    if error is None:
        return ok("broker", f"{host}:{port} accepts connections")
    return fail(
        "broker",
        f"cannot reach {host}:{port} ({error}): start the broker (`tms up`, `tms broker` or "
        "`systemctl start tms-broker`), or check [broker] host/port (TMS_BROKER_HOST, "
        "TMS_BROKER_PORT)",
    )


class LoginOutcome(Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"  # a CONNACK with a failure code
    UNREACHABLE = "unreachable"  # no TCP connection (or TLS handshake)
    NO_ANSWER = "no answer"  # connected, but no CONNACK in time


@dataclass(frozen=True, slots=True)
class LoginResult:
    outcome: LoginOutcome
    detail: str = ""


def mqtt_login_verdict(
    service: str, mqtt: MqttClientSettings, result: LoginResult | None, embedded: bool
) -> Verdict:
    """Whether ``service`` (ingest, console) logs in with its configured account.

    ``result`` is None when no login was tried because the account is not configured.
    """
    check = f"{service} MQTT login"
    prefix = f"TMS_{service.upper()}_MQTT"
    where = f"{mqtt.host}:{mqtt.port}"
    if result is None:
        if embedded:
            return skip(
                check,
                f"no account configured: `tms up` gives {service} a fresh one at each start "
                f"(set {prefix}_USERNAME/_PASSWORD to check one)",
            )
        return fail(
            check,
            f"{service} has no MQTT account: set {prefix}_USERNAME and {prefix}_PASSWORD "
            f"(`tms account add NAME --role {service}` makes one)",
        )
    if result.outcome is LoginOutcome.ACCEPTED:
        return ok(check, f"{mqtt.username!r} logged in at {where}")
    if result.outcome is LoginOutcome.REFUSED:
        return fail(
            check,
            f"the broker at {where} refused {mqtt.username!r} ({result.detail}): check "
            f"{prefix}_USERNAME and {prefix}_PASSWORD; `tms account rotate {mqtt.username}` "
            "prints a new secret",
        )
    if result.outcome is LoginOutcome.NO_ANSWER:
        return fail(
            check,
            f"{where} did not answer the login of {mqtt.username!r} ({result.detail}): is it "
            f"an MQTT broker? check {prefix}_HOST and {prefix}_PORT",
        )
    return fail(
        check,
        f"cannot reach {where} ({result.detail}): check {prefix}_HOST, {prefix}_PORT "
        f"and {prefix}_TLS_CA",
    )


# -- listening ports -------------------------------------------------------------------


class PortState(Enum):
    FREE = "free"
    IN_USE = "in use"
    UNAVAILABLE = "unavailable"  # cannot listen there at all (an address not of this host)


@dataclass(frozen=True, slots=True)
class Listener:
    """A process listening on a port, and the command lines of it and its ancestors."""

    pid: int
    chain: tuple[tuple[str, ...], ...]


def runs_tms(argv: Sequence[str], data_dir: Path) -> bool:
    """A `tms` command, or a server TMS started on files of its data directory
    (Mosquitto's -c, PostgreSQL's -D)."""
    if argv and Path(argv[0]).name == "tms":
        return True
    if any(a == "-m" and b == "tms" for a, b in zip(argv, argv[1:], strict=False)):
        return True
    prefix = str(data_dir).rstrip("/") + "/"
    return any(arg.startswith(prefix) for arg in argv[1:])


def is_tms_listener(listener: Listener, data_dir: Path) -> bool:
    return any(runs_tms(argv, data_dir) for argv in listener.chain)


def port_verdict(
    what: str,
    host: str,
    port: int,
    setting: str,
    state: PortState,
    detail: str,
    listeners: Sequence[Listener],
    data_dir: Path,
) -> Verdict:
    check = f"port {what}"
    where = f"{host}:{port}"
    if state is PortState.FREE:
        return ok(check, f"{where} is free")
    if state is PortState.UNAVAILABLE:
        return fail(check, f"cannot listen on {where} ({detail}): check {setting}")
    ours = [lst for lst in listeners if is_tms_listener(lst, data_dir)]
    if ours:
        command = " ".join(ours[0].chain[0])[:80] if ours[0].chain else "?"
        return ok(check, f"{where} is held by TMS itself (pid {ours[0].pid}: {command})")
    if listeners:
        first = listeners[0]
        command = " ".join(first.chain[0])[:80] if first.chain else "?"
        holder = f"pid {first.pid} ({command})"
    else:
        holder = "a process of another user"
    return fail(check, f"{where} is in use by {holder}: stop it, or choose another with {setting}")


def listening_inodes(table: str, port: int) -> set[str]:
    """The socket inodes listening on ``port`` in a /proc/net/tcp (or tcp6) table."""
    found: set[str] = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
            continue
        try:
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
        except (IndexError, ValueError):
            continue
        if local_port == port:
            found.add(fields[9])
    return found


def parent_pid(stat_line: str) -> int | None:
    """The parent's pid from /proc/<pid>/stat; the command name may hold spaces and
    parentheses, so read after its last ')'."""
    try:
        return int(stat_line.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None
