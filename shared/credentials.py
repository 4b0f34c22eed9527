"""Broker secrets: generation, the stored hash, and verification (pure, no I/O).

A secret is 256 random bits, so a single salted SHA-512 is enough: a slow hash would
only cost CPU during reconnect storms without making a random secret harder to guess.
The digest is SHA-512(secret + salt), which Mosquitto's ``$6$`` password-file entries
and EMQX's PostgreSQL authenticator (sha512, salt suffix) both check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SECRET_BYTES = 32
# Mosquitto 2.0 drops any $6$ entry whose decoded salt is not exactly 12 bytes.
SALT_CHARS = 12


@dataclass(frozen=True, slots=True)
class StoredSecret:
    salt: str
    secret_hash: str  # hex SHA-512 of secret + salt


def generate_secret() -> str:
    # Never with a leading "-": pasted after --password or -P, a command line would read
    # it as an option (one secret in 64 did; the support script's test met one).
    while True:
        secret = secrets.token_urlsafe(SECRET_BYTES)
        if not secret.startswith("-"):
            return secret


def hash_secret(secret: str, salt: str | None = None) -> StoredSecret:
    salt = salt if salt is not None else secrets.token_urlsafe(9)
    digest = hashlib.sha512(secret.encode() + salt.encode()).hexdigest()
    return StoredSecret(salt=salt, secret_hash=digest)


def verify_secret(secret: str, stored: StoredSecret) -> bool:
    candidate = hashlib.sha512(secret.encode() + stored.salt.encode()).hexdigest()
    return hmac.compare_digest(candidate, stored.secret_hash)


def mosquitto_password_entry(username: str, stored: StoredSecret) -> str:
    """One ``password_file`` line in Mosquitto's ``$6$`` (salted SHA-512) format."""
    salt_b64 = base64.b64encode(stored.salt.encode()).decode()
    hash_b64 = base64.b64encode(bytes.fromhex(stored.secret_hash)).decode()
    return f"{username}:$6${salt_b64}${hash_b64}"
