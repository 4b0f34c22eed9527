"""Broker secrets: random, stored only as a salted hash, in a form Mosquitto accepts."""

import base64

from shared.credentials import (
    SALT_CHARS,
    generate_secret,
    hash_secret,
    mosquitto_password_entry,
    verify_secret,
)


def test_secrets_are_256_bit_and_unique() -> None:
    secrets = {generate_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(base64.urlsafe_b64decode(s + "=")) == 32 for s in secrets)


def test_hash_verifies_only_the_right_secret() -> None:
    stored = hash_secret("right")
    assert verify_secret("right", stored)
    assert not verify_secret("wrong", stored)
    assert "right" not in stored.secret_hash


def test_same_secret_hashes_differently_with_new_salt() -> None:
    assert hash_secret("s").secret_hash != hash_secret("s").secret_hash


def test_mosquitto_entry_has_a_twelve_byte_salt() -> None:
    stored = hash_secret("s")
    assert len(stored.salt) == SALT_CHARS
    user, rest = mosquitto_password_entry("T1", stored).split(":", 1)
    _, kind, salt_b64, hash_b64 = rest.split("$")
    assert (user, kind) == ("T1", "6")
    assert len(base64.b64decode(salt_b64)) == 12
    assert base64.b64decode(hash_b64).hex() == stored.secret_hash


def test_no_secret_starts_with_a_dash() -> None:
    # One in 64 would, and a command line would read it as an option.
    assert not any(generate_secret().startswith("-") for _ in range(2000))
