"""The verdicts of ``tms check`` on files: the broker's TLS certificates and key, CA files,
the firmware signing key, and the directories TMS writes.

Pure: the command reads the files (``FileFacts``, ``DirFacts``) and passes the time;
these functions parse the bytes and judge them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from tms.check_rules import Verdict, fail, ok, warn

# A certificate that ends sooner than this is renewed now, not on the day it stops.
EXPIRY_WARNING = timedelta(days=30)
RENEW = "`tms certs init --force` makes new ones (every terminal then needs the new ca.pem)"


@dataclass(frozen=True, slots=True)
class FileFacts:
    """A file as the command found it: its bytes and mode, or why it could not be read."""

    path: Path
    data: bytes | None = None
    mode: int | None = None
    problem: str | None = None  # "missing", "permission denied", ...

    @property
    def missing(self) -> bool:
        return self.problem == "missing"


@dataclass(frozen=True, slots=True)
class DirFacts:
    """A directory TMS writes into, as the command found it."""

    path: Path
    exists: bool
    is_dir: bool
    # Whether this user may create files in it (in its nearest existing ancestor when
    # it does not exist yet: TMS makes it with its parents).
    writable: bool
    nearest: Path
    # An ancestor other users may not pass: PostgreSQL and Mosquitto, run as their own
    # users when TMS runs as root, could not reach the directory.
    unsearchable: Path | None = None


def _unreadable(check: str, facts: FileFacts, fix: str) -> Verdict:
    if facts.missing:
        return fail(check, f"{facts.path} is missing: {fix}")
    return fail(check, f"cannot read {facts.path} ({facts.problem}): run as the user that owns it")


def _validity(check: str, cert: x509.Certificate, path: Path, now: datetime) -> Verdict | None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return fail(check, f"{path} is valid only from {start:%Y-%m-%d %H:%M} UTC: check the clock")
    if now >= end:
        return fail(check, f"{path} expired on {end:%Y-%m-%d}: {RENEW}")
    if end - now < EXPIRY_WARNING:
        return warn(check, f"{path} expires on {end:%Y-%m-%d} ({(end - now).days} days): {RENEW}")
    return None


def _load_certificate(check: str, facts: FileFacts) -> x509.Certificate | Verdict:
    assert facts.data is not None
    try:
        return x509.load_pem_x509_certificate(facts.data)
    except ValueError as exc:
        return fail(check, f"{facts.path} is not a PEM certificate ({exc}): {RENEW}")


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def tls_verdicts(
    directory: Path, ca: FileFacts, cert: FileFacts, key: FileFacts, now: datetime
) -> list[Verdict]:
    """The broker's TLS files (``tms certs init``): present, readable, the key the
    certificate's, signed by the CA, in date; the key readable by its owner only."""
    check = "TLS"
    if ca.missing and cert.missing and key.missing:
        return [
            warn(
                check,
                f"no certificates in {directory}: terminals can only use plain MQTT; run "
                "`tms certs init --host NAME` before they join a network",
            )
        ]
    fix = f"restore it, or {RENEW}"
    unread = [_unreadable(check, f, fix) for f in (ca, cert, key) if f.data is None]
    if unread:
        return unread
    ca_cert = _load_certificate(check, ca)
    server = _load_certificate(check, cert)
    failed = [v for v in (ca_cert, server) if isinstance(v, Verdict)]
    if failed:
        return failed
    assert isinstance(ca_cert, x509.Certificate) and isinstance(server, x509.Certificate)
    assert key.data is not None
    found: list[Verdict] = []
    try:
        private = serialization.load_pem_private_key(key.data, password=None)
    except (ValueError, TypeError) as exc:
        return [fail(check, f"{key.path} is not an unencrypted PEM private key ({exc}): {RENEW}")]
    if _public_der(private.public_key()) != _public_der(server.public_key()):
        found.append(
            fail(check, f"{key.path} is not the key of {cert.path}: restore the pair, or {RENEW}")
        )
    try:
        server.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        found.append(
            fail(
                check,
                f"{cert.path} is not signed by {ca.path} ({exc or type(exc).__name__}): terminals "
                f"trusting that CA would refuse the broker; {RENEW}",
            )
        )
    for path, certificate in ((cert.path, server), (ca.path, ca_cert)):
        dated = _validity(check, certificate, path, now)
        if dated is not None:
            found.append(dated)
    if key.mode is not None and key.mode & 0o077:
        found.append(
            fail(
                check,
                f"{key.path} may be read by other users (mode {key.mode & 0o777:04o}): "
                f"chmod 600 {key.path}",
            )
        )
    if not found:
        end = server.not_valid_after_utc
        found.append(ok(check, f"{cert.path} matches its key and CA, valid until {end:%Y-%m-%d}"))
    return found


def ca_file_verdict(setting: str, facts: FileFacts, now: datetime) -> Verdict:
    """A CA file a client is told to trust ([ingest.mqtt] tls_ca, ...): PEM certificates
    in date."""
    check = f"CA file {setting}"
    if facts.data is None:
        return _unreadable(check, facts, f"copy the broker's ca.pem there, or correct {setting}")
    try:
        certificates = x509.load_pem_x509_certificates(facts.data)
    except ValueError as exc:
        return fail(check, f"{facts.path} holds no PEM certificate ({exc}): correct {setting}")
    for certificate in certificates:
        dated = _validity(check, certificate, facts.path, now)
        if dated is not None:
            return dated
    return ok(check, f"{facts.path}: {len(certificates)} certificate(s) in date")


def signing_key_verdict(path: Path, mode: int | None, problem: str | None) -> Verdict:
    """The firmware signing key: present, owner-only, Ed25519.

    ``mode`` None: there is no file. ``problem``: why it could not be loaded as an
    Ed25519 private key (rollouts.library.read_signing_key's message), else None.
    """
    check = "firmware signing key"
    if mode is None:
        return warn(
            check,
            f"no key at {path}: `tms up` makes one on start, else run `tms firmware keygen` "
            "before adding images",
        )
    if mode & 0o077:
        return fail(
            check,
            f"{path} may be read by other users (mode {mode & 0o777:04o}): chmod 600 {path} "
            "(whoever reads it can sign firmware every terminal installs)",
        )
    if problem is not None:
        return fail(check, f"{problem}; check [firmware] signing_key (TMS_FIRMWARE_SIGNING_KEY)")
    return ok(check, f"{path} is an Ed25519 key readable by its owner only")


def directory_verdict(check: str, facts: DirFacts, setting: str, as_root: bool) -> Verdict:
    """A directory TMS writes into: there (or creatable), a directory, writable, and, as
    root, reachable by the servers' own users."""
    path = facts.path
    if facts.exists and not facts.is_dir:
        return fail(check, f"{path} is not a directory: move it away, or correct {setting}")
    if not facts.writable:
        where = path if facts.exists else facts.nearest
        return fail(
            check,
            f"{where} is not writable by this user: run as its owner, or correct {setting}",
        )
    if as_root and facts.unsearchable is not None:
        return fail(
            check,
            f"{facts.unsearchable} is not searchable by other users, so PostgreSQL and "
            f"Mosquitto (their own users) cannot reach {path}: `chmod o+x "
            f"{facts.unsearchable}`, or choose another with {setting}",
        )
    if not facts.exists:
        return ok(check, f"{path} does not exist yet; it will be made in {facts.nearest}")
    return ok(check, f"{path} is writable")
