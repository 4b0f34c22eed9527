"""The verdicts of `tms check`: what each finding becomes, in one line that says what to do."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.settings import MqttClientSettings, Settings
from tms.check_file_rules import (
    DirFacts,
    FileFacts,
    ca_file_verdict,
    directory_verdict,
    signing_key_verdict,
    tls_verdicts,
)
from tms.check_rules import (
    Status,
    Verdict,
    config_file_verdict,
    console_key_verdict,
    exit_status,
    exposure_verdicts,
    placeholder_verdicts,
    report_json,
    secrets_file_verdict,
    secrets_in_file,
    summary,
    validate_settings,
)
from tms.check_service_rules import (
    DatabaseFailure,
    DatabaseTarget,
    Listener,
    LoginOutcome,
    LoginResult,
    PortState,
    broker_reach_verdict,
    classify_connect_error,
    database_verdicts,
    listening_inodes,
    mqtt_login_verdict,
    parent_pid,
    port_verdict,
    runs_tms,
    schema_verdict,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def statuses(verdicts: list[Verdict]) -> list[Status]:
    return [v.status for v in verdicts]


# -- the configuration -----------------------------------------------------------------


def test_every_bad_key_is_named_not_only_the_first() -> None:
    raw = {
        "console": {"port": 70000, "secretkey": "x"},
        "ingest": {"mqtt": {"port": "abc"}},
        "consol": {},
    }
    settings, verdicts = validate_settings(raw, {}, "/etc/tms/tms.toml")
    assert settings is None
    lines = [v.message for v in verdicts]
    assert statuses(verdicts) == [Status.FAIL] * 4
    assert any(
        line.startswith("bad value for [console] port = 70000 in /etc/tms/tms.toml")
        and "less than or equal to 65535" in line
        for line in lines
    )
    assert any("[ingest.mqtt] port = 'abc'" in line for line in lines)
    assert any(line.startswith("unknown key [console] secretkey in /etc/tms") for line in lines)
    assert any(line.startswith("unknown section [consol] in /etc/tms") for line in lines)


def test_a_bad_value_from_the_environment_names_its_variable() -> None:
    overrides = {"broker": {"kind": "rabbitmq"}}
    _, verdicts = validate_settings(overrides, overrides, "/etc/tms/tms.toml")
    (verdict,) = verdicts
    assert "[broker] kind = 'rabbitmq' in TMS_BROKER_KIND" in verdict.message
    assert verdict.message.endswith("correct TMS_BROKER_KIND")
    assert "'mosquitto' or 'amqtt'" in verdict.message


def test_a_bad_secret_is_never_echoed() -> None:
    raw = {"console": {"secret_key": 12345678901234567890}}
    _, verdicts = validate_settings(raw, {}, "tms.toml")
    assert "[console] secret_key" in verdicts[0].message
    assert "12345678901234567890" not in verdicts[0].message


def test_a_list_item_is_named_by_its_index() -> None:
    _, verdicts = validate_settings({"firmware": {"models": ["TC-200", 3]}}, {}, "t.toml")
    assert "[firmware] models[1]" in verdicts[0].message


def test_a_valid_configuration_is_one_ok_line_and_the_settings() -> None:
    overrides = {"console": {"port": "9000"}, "ingest": {"mqtt": {"username": "i"}}}
    settings, verdicts = validate_settings(overrides, overrides, None)
    assert settings is not None and settings.console.port == 9000
    assert verdicts == [
        Verdict(
            "config",
            Status.OK,
            "no configuration file (defaults) and 2 TMS_* variable(s) are valid",
        )
    ]


# -- secrets ---------------------------------------------------------------------------


def test_secrets_in_a_file_are_found_and_a_url_without_password_is_none() -> None:
    raw = {
        "database": {"url": "postgresql://tms:pw@db/tms"},
        "ingest": {"mqtt": {"password": "p", "username": "u"}},
        "console": {"secret_key": "k"},
        "notify": {"smtp_password": ""},
    }
    assert secrets_in_file(raw) == [
        "[database] url",
        "[ingest.mqtt] password",
        "[console] secret_key",
    ]
    assert secrets_in_file({"database": {"url": "postgresql://tms@db/tms"}}) == []


def test_a_config_file_with_secrets_must_be_owner_only() -> None:
    keys = ["[console] secret_key"]
    assert config_file_verdict("/etc/tms/tms.toml", 0o644, keys).status is Status.FAIL
    assert (
        "chmod 600 /etc/tms/tms.toml"
        in config_file_verdict("/etc/tms/tms.toml", 0o640, keys).message
    )
    assert config_file_verdict("/etc/tms/tms.toml", 0o600, keys).status is Status.OK
    assert config_file_verdict("/etc/tms/tms.toml", 0o644, []).status is Status.OK


def test_the_secrets_file_of_tms_up_is_owner_only() -> None:
    path = Path("/var/lib/tms/secrets.json")
    assert secrets_file_verdict(path, 0o600).status is Status.OK
    assert secrets_file_verdict(path, None).status is Status.OK  # tms up makes it
    verdict = secrets_file_verdict(path, 0o644)
    assert (
        verdict.status is Status.FAIL and "chmod 600 /var/lib/tms/secrets.json" in verdict.message
    )


@pytest.mark.parametrize(
    ("key", "embedded", "stored", "status", "says"),
    [
        (None, True, True, Status.OK, "secrets.json"),
        (None, True, False, Status.OK, "first start"),
        (None, False, False, Status.FAIL, "set TMS_CONSOLE_SECRET_KEY"),
        ("...", False, False, Status.FAIL, "placeholder"),
        ("ChangeMe", True, False, Status.FAIL, "placeholder"),
        ("short-key", False, False, Status.FAIL, "9 characters"),
        ("a-long-enough-random-key-0123", False, False, Status.OK, "long enough"),
    ],
)
def test_the_console_key(
    key: str | None, embedded: bool, stored: bool, status: Status, says: str
) -> None:
    verdict = console_key_verdict(key, embedded, stored)
    assert verdict.status is status
    assert says in verdict.message


def test_placeholder_passwords_fail_by_their_variable() -> None:
    verdicts = placeholder_verdicts(
        {"TMS_INGEST_MQTT_PASSWORD": "secret", "TMS_CONSOLE_MQTT_PASSWORD": "Xy7-long-random"}
    )
    assert statuses(verdicts) == [Status.FAIL]
    assert verdicts[0].message.startswith("TMS_INGEST_MQTT_PASSWORD is a placeholder")
    assert statuses(placeholder_verdicts({"A": "Xy7-long-random", "B": None})) == [Status.OK]
    assert statuses(placeholder_verdicts({"A": None})) == [Status.OK]


def test_exposure_on_a_network_is_a_warning() -> None:
    assert exposure_verdicts(Settings()) == []
    settings = Settings.model_validate(
        {"console": {"host": "0.0.0.0"}, "broker": {"host": "10.1.2.3"}}
    )
    found = exposure_verdicts(settings)
    assert statuses(found) == [Status.WARN, Status.WARN]
    assert "TMS_CONSOLE_COOKIE_SECURE=true" in found[0].message
    assert "10.1.2.3:1883" in found[1].message
    secure = Settings.model_validate({"console": {"host": "0.0.0.0", "cookie_secure": True}})
    assert exposure_verdicts(secure) == []


# -- the database ----------------------------------------------------------------------

REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 5999 failed: Connection '
    "refused\n\tIs the server running on that host and accepting TCP/IP connections?"
)
WRONG_PASSWORD = (
    'connection failed: connection to server at "127.0.0.1", port 5433 failed: FATAL:  '
    'password authentication failed for user "tms"'
)
NO_DATABASE = (
    'connection failed: connection to server at "127.0.0.1", port 5433 failed: FATAL:  '
    'database "nope" does not exist'
)
NO_ROLE = 'connection failed: FATAL:  role "ann" does not exist'


@pytest.mark.parametrize(
    ("text", "user", "name", "failure"),
    [
        (REFUSED, "tms", "tms", DatabaseFailure.UNREACHABLE),
        (WRONG_PASSWORD, "tms", "tms", DatabaseFailure.PASSWORD),
        (NO_DATABASE, "tms", "nope", DatabaseFailure.NO_DATABASE),
        (NO_ROLE, "ann", "tms", DatabaseFailure.NO_ROLE),
        ("connection failed: timeout expired", "tms", "tms", DatabaseFailure.UNREACHABLE),
        ("FATAL: too many connections for role", "tms", "tms", DatabaseFailure.OTHER),
    ],
)
def test_connect_errors_are_classified(
    text: str, user: str, name: str, failure: DatabaseFailure
) -> None:
    assert classify_connect_error(text, user, name) is failure


TARGET = DatabaseTarget("PostgreSQL at db:5432", "tms", "tms", "TMS_DATABASE_URL ([database] url)")


def test_a_database_that_answers_logs_in_and_exists_is_three_ok_lines() -> None:
    assert statuses(database_verdicts(TARGET, None)) == [Status.OK] * 3


def test_an_unreachable_server_fails_first_and_skips_the_rest() -> None:
    verdicts = database_verdicts(TARGET, DatabaseFailure.UNREACHABLE, REFUSED)
    assert statuses(verdicts) == [Status.FAIL, Status.SKIP, Status.SKIP]
    assert "cannot reach PostgreSQL at db:5432" in verdicts[0].message
    assert "Connection refused" in verdicts[0].message
    assert "Is the server running" not in verdicts[0].message  # first line only


def test_a_wrong_password_is_the_login_line() -> None:
    verdicts = database_verdicts(TARGET, DatabaseFailure.PASSWORD, WRONG_PASSWORD)
    assert statuses(verdicts) == [Status.OK, Status.FAIL, Status.SKIP]
    assert "refused the password of user 'tms': check TMS_DATABASE_URL" in verdicts[1].message


def test_a_missing_database_is_the_third_line_and_says_how_to_make_it() -> None:
    verdicts = database_verdicts(TARGET, DatabaseFailure.NO_DATABASE, NO_DATABASE)
    assert statuses(verdicts) == [Status.OK, Status.OK, Status.FAIL]
    assert "has no database 'tms'" in verdicts[2].message
    assert "tms db upgrade" in verdicts[2].message


REVISIONS = ["0014", "0013", "0012", "0001"]


def test_the_schema_against_the_newest_migration() -> None:
    assert schema_verdict("0014", REVISIONS).status is Status.OK
    behind = schema_verdict("0012", REVISIONS)
    assert behind.status is Status.FAIL
    assert behind.message == (
        "the database is at revision 0012, 2 behind 0014: run `tms db upgrade`"
    )
    empty = schema_verdict(None, REVISIONS)
    assert empty.status is Status.FAIL and "run `tms db upgrade`" in empty.message
    newer = schema_verdict("0099", REVISIONS)
    assert newer.status is Status.FAIL and "newer TMS" in newer.message


# -- the broker ------------------------------------------------------------------------


def test_an_unreachable_broker_says_how_to_start_it() -> None:
    assert broker_reach_verdict("127.0.0.1", 1883, None).status is Status.OK
    verdict = broker_reach_verdict("127.0.0.1", 1883, "Connection refused")
    assert verdict.status is Status.FAIL
    assert "cannot reach 127.0.0.1:1883 (Connection refused)" in verdict.message
    assert "TMS_BROKER_PORT" in verdict.message


ACCOUNT = MqttClientSettings(username="tms-ingest", password="s3cret-enough")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("result", "embedded", "status", "says"),
    [
        (LoginResult(LoginOutcome.ACCEPTED), False, Status.OK, "'tms-ingest' logged in"),
        (
            LoginResult(LoginOutcome.REFUSED, "Not authorized"),
            False,
            Status.FAIL,
            "refused 'tms-ingest' (Not authorized): check TMS_INGEST_MQTT_USERNAME",
        ),
        (LoginResult(LoginOutcome.NO_ANSWER, "no CONNACK"), False, Status.FAIL, "did not answer"),
        (
            LoginResult(LoginOutcome.UNREACHABLE, "Connection refused"),
            True,
            Status.FAIL,
            "TMS_INGEST_MQTT_TLS_CA",
        ),
    ],
)
def test_a_service_login(result: LoginResult, embedded: bool, status: Status, says: str) -> None:
    verdict = mqtt_login_verdict("ingest", ACCOUNT, result, embedded)
    assert verdict.status is status
    assert says in verdict.message


def test_a_service_without_account_fails_in_production_and_is_skipped_under_tms_up() -> None:
    none = MqttClientSettings()
    production = mqtt_login_verdict("console", none, None, embedded=False)
    assert production.status is Status.FAIL
    assert "set TMS_CONSOLE_MQTT_USERNAME and TMS_CONSOLE_MQTT_PASSWORD" in production.message
    assert mqtt_login_verdict("console", none, None, embedded=True).status is Status.SKIP


# -- ports -----------------------------------------------------------------------------

DATA = Path("/var/lib/tms")


@pytest.mark.parametrize(
    ("argv", "ours"),
    [
        (("/opt/tms/.venv/bin/tms", "console"), True),
        (("/usr/bin/python3", "-m", "tms", "up"), True),
        (("mosquitto", "-c", "/var/lib/tms/broker/mosquitto.conf"), True),
        (("/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/tms/postgres/data"), True),
        (("mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"), False),
        (("nginx: master process",), False),
        (("/var/lib/tms-other/run",), False),
    ],
)
def test_what_counts_as_tms(argv: tuple[str, ...], ours: bool) -> None:
    assert runs_tms(argv, DATA) is ours


def test_a_port_free_or_held_by_tms_is_ok_and_another_program_fails() -> None:
    setting = "[console] port (TMS_CONSOLE_PORT)"
    assert (
        port_verdict("console", "127.0.0.1", 8000, setting, PortState.FREE, "", [], DATA).status
        is Status.OK
    )
    ours = Listener(42, (("/usr/bin/python3", "-m", "tms", "console"), ("tms", "up")))
    held = port_verdict("console", "127.0.0.1", 8000, setting, PortState.IN_USE, "", [ours], DATA)
    assert held.status is Status.OK and "held by TMS itself (pid 42" in held.message
    # Mosquitto as a child of `tms broker`: its parent makes it ours.
    child = Listener(43, (("mosquitto", "-c", "/run/tms/x.conf"), ("/opt/tms/bin/tms", "broker")))
    assert is_ok(
        port_verdict("broker", "127.0.0.1", 1883, setting, PortState.IN_USE, "", [child], DATA)
    )
    other = Listener(7, (("nginx: worker",),))
    taken = port_verdict("console", "127.0.0.1", 8000, setting, PortState.IN_USE, "", [other], DATA)
    assert taken.status is Status.FAIL
    assert (
        "in use by pid 7 (nginx: worker): stop it, or choose another with [console]"
        in taken.message
    )
    unseen = port_verdict("console", "127.0.0.1", 8000, setting, PortState.IN_USE, "", [], DATA)
    assert unseen.status is Status.FAIL and "another user" in unseen.message
    bad = port_verdict(
        "console", "10.9.9.9", 8000, setting, PortState.UNAVAILABLE, "Cannot assign", [], DATA
    )
    assert bad.status is Status.FAIL and "cannot listen on 10.9.9.9:8000" in bad.message


def is_ok(verdict: Verdict) -> bool:
    return verdict.status is Status.OK


def test_listening_sockets_are_read_from_proc_net_tcp() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0"
        "        0 1111 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:075B 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0"
        "        0 2222 1 0000000000000000 20 4 30 10 -1\n"
        "   2: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0"
        "        0 3333 1 0000000000000000 100 0 0 10 0\n"
    )
    assert listening_inodes(table, 1883) == {"1111"}  # 0x075B; the established one is not
    assert listening_inodes(table, 8000) == {"3333"}
    assert listening_inodes(table, 9) == set()


def test_the_parent_pid_survives_a_command_name_with_spaces_and_parentheses() -> None:
    assert parent_pid("1234 (tms (x) y) S 77 1234 1234 0 -1") == 77
    assert parent_pid("garbage") is None


# -- files -----------------------------------------------------------------------------


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(
    *, start: datetime = NOW - timedelta(days=1), end: datetime = NOW + timedelta(days=365)
) -> tuple[bytes, bytes, bytes, ec.EllipticCurvePrivateKey]:
    """A CA and a server certificate signed by it: (ca.pem, server.pem, server.key, ca key)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Test CA"))
        .issuer_name(_name("Test CA"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=10))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(ca_key, hashes.SHA256())
    )
    return _pem(ca), _pem(server), _key_pem(key), ca_key


CERTS = Path("/var/lib/tms/certs")


TlsFiles = tuple[FileFacts, FileFacts, FileFacts]


def tls_files(ca: bytes, cert: bytes, key: bytes, key_mode: int = 0o600) -> TlsFiles:
    return (
        FileFacts(CERTS / "ca.pem", ca, 0o644),
        FileFacts(CERTS / "server.pem", cert, 0o644),
        FileFacts(CERTS / "server.key", key, key_mode),
    )


def test_good_tls_files_are_one_ok_line() -> None:
    ca, cert, key, _ = make_pki()
    verdicts = tls_verdicts(CERTS, *tls_files(ca, cert, key), NOW)
    assert statuses(verdicts) == [Status.OK]
    assert "valid until 2027-12-02" in verdicts[0].message


def test_no_certificates_at_all_is_a_warning_to_run_certs_init() -> None:
    ca, cert, key = (FileFacts(CERTS / n, problem="missing") for n in ("ca.pem", "s.pem", "s.key"))
    (verdict,) = tls_verdicts(CERTS, ca, cert, key, NOW)
    assert verdict.status is Status.WARN and "tms certs init" in verdict.message


def test_one_missing_or_unreadable_file_fails() -> None:
    ca, cert, _ = tls_files(*make_pki()[:3])
    missing = FileFacts(CERTS / "server.key", problem="missing")
    (verdict,) = tls_verdicts(CERTS, ca, cert, missing, NOW)
    assert verdict.status is Status.FAIL and "server.key is missing" in verdict.message
    locked = FileFacts(CERTS / "server.key", mode=0o600, problem="permission denied")
    (verdict,) = tls_verdicts(CERTS, ca, cert, locked, NOW)
    assert "cannot read /var/lib/tms/certs/server.key (permission denied)" in verdict.message


def test_an_expired_certificate_fails_and_one_expiring_soon_warns() -> None:
    ca, cert, key, _ = make_pki(start=NOW - timedelta(days=400), end=NOW - timedelta(days=1))
    (expired,) = tls_verdicts(CERTS, *tls_files(ca, cert, key), NOW)
    assert expired.status is Status.FAIL and "expired on 2026-12-01" in expired.message
    ca, cert, key, _ = make_pki(end=NOW + timedelta(days=10))
    (soon,) = tls_verdicts(CERTS, *tls_files(ca, cert, key), NOW)
    assert soon.status is Status.WARN and "(10 days)" in soon.message
    ca, cert, key, _ = make_pki(start=NOW + timedelta(days=1))
    (early,) = tls_verdicts(CERTS, *tls_files(ca, cert, key), NOW)
    assert early.status is Status.FAIL and "check the clock" in early.message


def test_a_key_of_another_certificate_fails() -> None:
    ca, cert, _, _ = make_pki()
    _, _, other_key, _ = make_pki()
    (verdict,) = tls_verdicts(CERTS, *tls_files(ca, cert, other_key), NOW)
    assert verdict.status is Status.FAIL
    assert "server.key is not the key of /var/lib/tms/certs/server.pem" in verdict.message


def test_a_certificate_of_another_ca_fails() -> None:
    _, cert, key, _ = make_pki()
    other_ca, _, _, _ = make_pki()
    (verdict,) = tls_verdicts(CERTS, *tls_files(other_ca, cert, key), NOW)
    assert verdict.status is Status.FAIL and "is not signed by" in verdict.message


def test_a_server_key_others_may_read_fails() -> None:
    ca, cert, key, _ = make_pki()
    (verdict,) = tls_verdicts(CERTS, *tls_files(ca, cert, key, key_mode=0o644), NOW)
    assert verdict.status is Status.FAIL and "chmod 600" in verdict.message


def test_garbage_instead_of_pem_fails() -> None:
    ca, _, key, _ = make_pki()
    (verdict,) = tls_verdicts(CERTS, *tls_files(ca, b"not a certificate", key), NOW)
    assert verdict.status is Status.FAIL and "is not a PEM certificate" in verdict.message


def test_a_client_ca_file() -> None:
    ca, _, _, _ = make_pki()
    path = Path("/etc/tms/ca.pem")
    assert (
        ca_file_verdict("[ingest.mqtt] tls_ca", FileFacts(path, ca, 0o644), NOW).status is Status.OK
    )
    missing = ca_file_verdict("[ingest.mqtt] tls_ca", FileFacts(path, problem="missing"), NOW)
    assert missing.status is Status.FAIL and "correct [ingest.mqtt] tls_ca" in missing.message
    junk = ca_file_verdict("[ingest.mqtt] tls_ca", FileFacts(path, b"junk", 0o644), NOW)
    assert junk.status is Status.FAIL


def test_the_signing_key() -> None:
    path = Path("/var/lib/tms/firmware-signing.key")
    assert signing_key_verdict(path, 0o600, None).status is Status.OK
    assert signing_key_verdict(path, 0o400, None).status is Status.OK
    assert signing_key_verdict(path, None, None).status is Status.WARN
    loose = signing_key_verdict(path, 0o644, None)
    assert loose.status is Status.FAIL
    assert "mode 0644" in loose.message and f"chmod 600 {path}" in loose.message
    wrong = signing_key_verdict(path, 0o600, f"{path}: the signing key must be an Ed25519 key")
    assert wrong.status is Status.FAIL and "Ed25519" in wrong.message


def test_directories() -> None:
    def facts(**changes: object) -> DirFacts:
        base: dict[str, object] = {
            "path": Path("/srv/tms"),
            "exists": True,
            "is_dir": True,
            "writable": True,
            "nearest": Path("/srv/tms"),
            "unsearchable": None,
        }
        return DirFacts(**{**base, **changes})  # type: ignore[arg-type]

    setting = "--data-dir (TMS_DATA_DIR)"
    assert directory_verdict("data dir", facts(), setting, as_root=True).status is Status.OK
    later = facts(exists=False, is_dir=False, nearest=Path("/srv"))
    assert "will be made in /srv" in directory_verdict("data dir", later, setting, False).message
    assert directory_verdict("data dir", facts(is_dir=False), setting, False).status is Status.FAIL
    locked = directory_verdict("data dir", facts(writable=False), setting, False)
    assert locked.status is Status.FAIL and "not writable" in locked.message
    hidden = facts(unsearchable=Path("/srv"))
    assert directory_verdict("data dir", hidden, setting, as_root=False).status is Status.OK
    refused = directory_verdict("data dir", hidden, setting, as_root=True)
    assert refused.status is Status.FAIL and "chmod o+x /srv" in refused.message


# -- the outcome -----------------------------------------------------------------------


def test_any_fail_exits_1_and_warnings_do_not() -> None:
    good = [
        Verdict("a", Status.OK, "x"),
        Verdict("b", Status.WARN, "y"),
        Verdict("c", Status.SKIP, "z"),
    ]
    assert exit_status(good) == 0
    assert exit_status([*good, Verdict("d", Status.FAIL, "w")]) == 1
    assert summary(good) == "all checks passed (1 warning(s))"
    assert summary([*good, Verdict("d", Status.FAIL, "w")]).startswith("1 check(s) failed")


def test_lines_and_json() -> None:
    verdicts = [Verdict("database", Status.FAIL, "no"), Verdict("broker", Status.OK, "yes")]
    assert [v.line() for v in verdicts] == ["FAIL database: no", "ok   broker: yes"]
    document = json.loads(report_json(verdicts))
    assert document["ok"] is False and document["failed"] == 1
    assert document["checks"][0] == {"check": "database", "status": "fail", "message": "no"}
