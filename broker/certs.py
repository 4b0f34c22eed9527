"""The private CA and the broker's server certificate (``tms certs init``).

Terminals trust ``ca.pem`` and verify the broker's name against the server
certificate's subject alternative names. The CA key never leaves the certs
directory (mode 0600); brokers get the server certificate and key only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.errors import BrokerError

CA_DAYS = 3650
SERVER_DAYS = 825  # what browsers and most TLS stacks still accept for a leaf certificate


class CertificateError(BrokerError):
    """Certificates that cannot be created or are missing."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where ``tms certs init`` keeps the CA and the server certificate."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def server_ready(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.server_cert, self.server_key))


def default_names() -> list[str]:
    return sorted({"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()})


def _subject_names(names: Iterable[str]) -> list[x509.GeneralName]:
    general: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return general


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca(
    now: datetime.datetime, organisation: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} private CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server(
    now: datetime.datetime,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: list[str],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(_subject_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def init_certs(
    files: TlsFiles, names: list[str], force: bool = False, organisation: str = "TMS"
) -> TlsFiles:
    """Create the CA and a server certificate for ``names`` (host names or IP addresses)."""
    if not names:
        raise CertificateError("give at least one host name the broker is reached by (--host)")
    if files.ca_cert.exists() and not force:
        raise CertificateError(
            f"a CA already exists in {files.directory}; terminals trust it already. Use --force "
            "to replace it (every terminal then needs the new ca.pem)"
        )
    files.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(files.directory, 0o755)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _ca(now, organisation)
    server_key, server_cert = _server(now, ca_key, ca_cert, names)
    _write_private(files.ca_key, _key_pem(ca_key), 0o600)
    _write_private(files.server_key, _key_pem(server_key), 0o600)
    _write_private(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write_private(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files
