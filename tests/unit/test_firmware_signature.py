"""Signed firmware manifests: what signs, what verifies, and what every tampering gives."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.firmware_signature import (
    MAX_IMAGE_BYTES,
    FirmwareManifest,
    FirmwareRejected,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    sign,
    verify_image,
    verify_signature,
)

IMAGE = b"TC200FW:2.5.0\n" + bytes(range(256)) * 64


def signed(image: bytes = IMAGE) -> tuple[FirmwareManifest, str, object]:
    key = generate_key()
    manifest = FirmwareManifest.of_image("2.5.0", ("TC-200",), image)
    return manifest, sign(manifest, key), key


def test_a_signed_image_verifies_with_the_public_key_alone() -> None:
    manifest, signature, key = signed()
    public = load_public_key(public_key_pem(key))  # type: ignore[arg-type]
    verify_image(manifest, signature, public, IMAGE)
    assert manifest.sha256 == hashlib.sha256(IMAGE).hexdigest() and manifest.size == len(IMAGE)


def test_the_private_key_survives_its_pem_and_keeps_its_id() -> None:
    key = generate_key()
    again = load_private_key(private_key_pem(key))
    assert key_id(again) == key_id(key) == key_id(load_public_key(public_key_pem(key)))
    assert len(key_id(key)) == 16


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda image: image[:-1], "size"),
        (lambda image: image + b"\x00", "size"),
        (lambda image: image[:100] + bytes([image[100] ^ 1]) + image[101:], "sha256"),
    ],
)
def test_a_tampered_image_is_refused_with_its_reason(tamper, reason: str) -> None:  # type: ignore[no-untyped-def]
    manifest, signature, key = signed()
    with pytest.raises(FirmwareRejected) as refused:
        verify_image(manifest, signature, key.public_key(), tamper(IMAGE))  # type: ignore[attr-defined]
    assert refused.value.reason == reason


def test_a_manifest_changed_after_signing_fails_its_signature() -> None:
    manifest, signature, key = signed()
    other = FirmwareManifest.of_image("2.5.0", ("TC-200", "TC-300"), IMAGE)
    newer = FirmwareManifest("9.9.9", manifest.models, manifest.size, manifest.sha256)
    for changed in (other, newer):
        with pytest.raises(FirmwareRejected) as refused:
            verify_signature(changed, signature, key.public_key())  # type: ignore[attr-defined]
        assert refused.value.reason == "signature"


def test_another_key_or_a_garbled_signature_is_refused() -> None:
    manifest, signature, _ = signed()
    stranger = generate_key().public_key()
    for bad in (signature, "", "not base64!", "QUJD", signature[:-4] + "AAAA", "é"):
        key = stranger if bad == signature else generate_key().public_key()
        with pytest.raises(FirmwareRejected) as refused:
            verify_signature(manifest, bad, key)
        assert refused.value.reason == "signature"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"version": ""}, "version"),
        ({"version": "x" * 33}, "version"),
        ({"version": "2.5.0\n"}, "version"),
        ({"models": ()}, "models"),
        ({"models": ("TC 200",)}, "models"),
        ({"size": 0}, "size"),
        ({"size": MAX_IMAGE_BYTES + 1}, "size"),
        ({"sha256": "A" * 64}, "sha256"),
        ({"sha256": "0" * 63}, "sha256"),
    ],
)
def test_a_bad_manifest_is_refused_with_its_reason(fields: dict[str, object], reason: str) -> None:
    good: dict[str, object] = {
        "version": "2.5.0",
        "models": ("TC-200",),
        "size": 10,
        "sha256": "0" * 64,
    }
    with pytest.raises(FirmwareRejected) as refused:
        FirmwareManifest(**{**good, **fields})  # type: ignore[arg-type]
    assert refused.value.reason == reason


def test_keys_that_are_not_ed25519_pem_are_refused() -> None:
    for pem in (b"", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"):
        with pytest.raises(FirmwareRejected):
            load_private_key(pem)
        with pytest.raises(FirmwareRejected):
            load_public_key(pem)


@given(st.lists(st.sampled_from(["TC-200", "TC-300", "TC-200L"]), min_size=1))
def test_the_signed_bytes_do_not_depend_on_the_order_of_the_models(models: list[str]) -> None:
    one = FirmwareManifest("1.0", tuple(models), 5, "0" * 64)
    other = FirmwareManifest("1.0", tuple(reversed(models)), 5, "0" * 64)
    assert one.canonical() == other.canonical()
    assert one.fits(models[0]) and not one.fits("TC-900")
