"""What makes a firmware image trusted: its manifest (version, the models it fits, size,
SHA-256) signed with the platform's Ed25519 key. Pure: no files, no network.

The signature covers the manifest's canonical bytes, not the image: the manifest names
the image by size and SHA-256, so a terminal checks the image against the manifest and
the manifest against the signature, and a tampered byte fails one of the two. The
private key signs in ``tms firmware`` only; agents hold the public key alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# A TC-200 stages at most this much (agent/PROTOCOL.md, FIRMWARE_BEGIN's size).
MAX_IMAGE_BYTES = 16 * 1024 * 1024
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}")
MODEL = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class FirmwareRejected(Exception):
    """An image, manifest or signature that must not reach a terminal; ``reason`` is
    one word for counting, the message says what was wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FirmwareManifest:
    version: str
    models: tuple[str, ...]
    size: int
    sha256: str  # lowercase hex

    def __post_init__(self) -> None:
        if not VERSION.fullmatch(self.version):
            raise FirmwareRejected(
                "version", f"version {self.version!r}: 1-32 letters, digits and . + _ -"
            )
        if not self.models or any(not MODEL.fullmatch(model) for model in self.models):
            raise FirmwareRejected("models", "name at least one terminal model (e.g. TC-200)")
        if not 0 < self.size <= MAX_IMAGE_BYTES:
            raise FirmwareRejected(
                "size", f"an image of {self.size} bytes: it must be 1 to {MAX_IMAGE_BYTES} bytes"
            )
        if not _SHA256_HEX.fullmatch(self.sha256):
            raise FirmwareRejected("sha256", "the SHA-256 must be 64 lowercase hex digits")

    @classmethod
    def of_image(cls, version: str, models: tuple[str, ...], image: bytes) -> FirmwareManifest:
        return cls(
            version, tuple(sorted(set(models))), len(image), hashlib.sha256(image).hexdigest()
        )

    def canonical(self) -> bytes:
        """The bytes that are signed: the same manifest always gives the same bytes."""
        body = {
            "models": sorted(self.models),
            "sha256": self.sha256,
            "size": self.size,
            "version": self.version,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def fits(self, model: str) -> bool:
        return model in self.models


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise FirmwareRejected("key", f"not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FirmwareRejected("key", "the signing key must be an Ed25519 key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise FirmwareRejected("key", f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise FirmwareRejected("key", "the firmware key must be an Ed25519 key")
    return key


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """A short fingerprint that names a key in logs and on screen (not a secret)."""
    raw = (key.public_key() if isinstance(key, Ed25519PrivateKey) else key).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(manifest: FirmwareManifest, key: Ed25519PrivateKey) -> str:
    """The manifest's signature, base64."""
    return base64.b64encode(key.sign(manifest.canonical())).decode("ascii")


def verify_signature(manifest: FirmwareManifest, signature: str, key: Ed25519PublicKey) -> None:
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        key.verify(raw, manifest.canonical())
    except (InvalidSignature, binascii.Error, UnicodeEncodeError, ValueError):
        raise FirmwareRejected(
            "signature", f"firmware {manifest.version}: the signature does not match its manifest"
        ) from None


def verify_image(
    manifest: FirmwareManifest, signature: str, key: Ed25519PublicKey, image: bytes
) -> None:
    """Raise FirmwareRejected unless ``image`` is the one the signed manifest names."""
    verify_signature(manifest, signature, key)
    if len(image) != manifest.size:
        raise FirmwareRejected(
            "size",
            f"firmware {manifest.version}: {len(image)} bytes, the manifest says {manifest.size}",
        )
    if hashlib.sha256(image).hexdigest() != manifest.sha256:
        raise FirmwareRejected(
            "sha256", f"firmware {manifest.version}: the image's SHA-256 is not the manifest's"
        )
