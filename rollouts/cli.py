"""``tms firmware``: the platform's signing key, and the firmware library from the command
line (add, list, release, deprecate), audited as ``cli:<user>`` like every change."""

from __future__ import annotations

import getpass
from pathlib import Path

import click
from sqlmodel import Session

from rollouts import library
from shared.cli_support import in_session, settings_of
from shared.firmware_signature import (
    generate_key,
    key_id,
    private_key_pem,
    public_key_pem,
)
from shared.models import FirmwareState


def _library(ctx: click.Context) -> library.Library:
    return library.firmware_library_of(settings_of(ctx))


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _fail(exc: library.FirmwareError) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def firmware() -> None:
    """The firmware library and the key that signs its images."""


@firmware.command("keygen")
@click.option("--replace", is_flag=True, help="Replace an existing key (old images then fail).")
@click.pass_context
def keygen(ctx: click.Context, replace: bool) -> None:
    """Make the platform's Ed25519 signing key and print its public half for the agents."""
    path = _library(ctx).signing_key
    key = generate_key()
    try:
        library.write_signing_key(path, private_key_pem(key), replace=replace)
    except library.FirmwareError as exc:
        raise _fail(exc) from None
    # Only the public key on standard output, so that it can be piped to a file.
    click.echo(
        f"Signing key {key_id(key)} written to {path} (readable by its owner only).", err=True
    )
    click.echo("Give the agents this public key (agent setting firmware_public_key):", err=True)
    click.echo(public_key_pem(key).decode(), nl=False)


@firmware.command("public-key")
@click.pass_context
def public_key(ctx: click.Context) -> None:
    """Print the public key the agents verify images with."""
    try:
        key = library.read_signing_key(_library(ctx).signing_key)
    except library.FirmwareError as exc:
        raise _fail(exc) from None
    click.echo(public_key_pem(key).decode(), nl=False)


@firmware.command("add")
@click.argument("image_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", "version", required=True, help="The version the image announces.")
@click.option(
    "--model", "models", multiple=True, default=("TC-200",), show_default=True,
    help="A terminal model the image fits (repeat for several).",
)  # fmt: skip
@click.option("--notes", default="", help="Release notes.")
@click.pass_context
def add(
    ctx: click.Context, image_file: Path, version: str, models: tuple[str, ...], notes: str
) -> None:
    """Check, sign and add IMAGE_FILE to the library as a draft."""
    found = _library(ctx)
    image = image_file.read_bytes()

    def work(session: Session) -> tuple[str, int, str, str]:
        added = library.add_image(
            session, found, image=image, filename=image_file.name, version=version,
            models=models, notes=notes, actor=_actor(),
        )  # fmt: skip
        # Read before the commit expires the row (the session is gone after it).
        return added.version, added.size, added.sha256, added.key_id

    try:
        added_version, size, sha256, signed_by = in_session(ctx, work)
    except library.FirmwareError as exc:
        raise _fail(exc) from None
    click.echo(
        f"Firmware {added_version} added as a draft: {size:,} bytes, SHA-256 {sha256},"
        f" signed by key {signed_by}. Release it with `tms firmware release {added_version}`."
    )


@firmware.command("list")
@click.pass_context
def list_firmware(ctx: click.Context) -> None:
    """The library, newest first."""
    rows = in_session(
        ctx,
        lambda s: [
            (f.version, f.state, f.size, ",".join(f.models or ()), f.sha256[:16], f.created_at)
            for f in library.listing(s)
        ],
    )
    if not rows:
        click.echo("The library is empty: add an image with `tms firmware add FILE --version V`.")
        return
    click.echo(f"{'VERSION':<20} {'STATE':<11} {'BYTES':>12}  {'MODELS':<16} SHA-256")
    for version, state, size, models, digest, _created in rows:
        click.echo(f"{version:<20} {state:<11} {size:>12,}  {models:<16} {digest}…")


def _change(ctx: click.Context, version: str, to: FirmwareState) -> None:
    try:
        in_session(ctx, lambda s: library.change_state(s, version, to, _actor()))
    except library.FirmwareError as exc:
        raise _fail(exc) from None
    click.echo(f"Firmware {version} is {to.value}.")


@firmware.command("release")
@click.argument("version")
@click.pass_context
def release(ctx: click.Context, version: str) -> None:
    """Offer a draft to rollouts."""
    _change(ctx, version, FirmwareState.RELEASED)


@firmware.command("deprecate")
@click.argument("version")
@click.pass_context
def deprecate(ctx: click.Context, version: str) -> None:
    """Offer an image no more (it stays in the library and in the update history)."""
    _change(ctx, version, FirmwareState.DEPRECATED)
