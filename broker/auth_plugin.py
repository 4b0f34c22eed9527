"""TMS's Mosquitto plugin (``broker/mosquitto_plugin/tms_auth.c``): build, files, options.

The plugin adds what Mosquitto 2.0.11's password_file and acl_file cannot: a brute-force
throttle, the rule that a client id names only its own account (a terminal's is its
serial), refusing ``$share/...`` subscriptions to all but ingest accounts, and refusing
a retained publish outside ``broker.acl.RETAINABLE_FILTERS`` (acl_file cannot see the
retain flag). It only
ever refuses; password_file and acl_file (rendered from ``broker.acl.GRANTS``) still
admit, so there is one source of truth for the topic rules.

It is compiled from source on first use (gcc, make, and the headers of Debian's
``mosquitto-dev``, ``libmosquitto-dev`` and ``libssl-dev``); without it ``tms broker``
does not start.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from broker.acl import RETAINABLE_FILTERS, may_join_shared_group
from broker.errors import MosquittoError
from registry.provisioning import BrokerAccount
from shared.settings import BrokerSettings

SOURCE_DIR = Path(__file__).with_name("mosquitto_plugin")
PLUGIN_NAME = "tms_auth.so"
# Files the build needs besides a C compiler and make.
_BUILD_HEADERS = {
    "/usr/include/mosquitto_broker.h": "mosquitto-dev",
    "/usr/include/mosquitto.h": "libmosquitto-dev",
    "/usr/include/openssl/evp.h": "libssl-dev",
}
_INSTALL_HINT = (
    "install the build dependencies with `apt-get install gcc make mosquitto-dev "
    "libmosquitto-dev libssl-dev` "
    "(scripts/bootstrap does it)"
)


@dataclass(frozen=True, slots=True)
class PluginOptions:
    """The plugin's ``plugin_opt_*`` settings (see tms_auth.c ``read_options``)."""

    delay_after: int
    lockout_after: int
    lockout_s: int
    window_s: int
    delay_step_ms: int
    delay_max_ms: int

    @classmethod
    def from_settings(cls, settings: BrokerSettings) -> PluginOptions:
        return cls(
            delay_after=settings.login_delay_after,
            lockout_after=settings.login_lockout_after,
            lockout_s=settings.login_lockout_s,
            window_s=settings.login_window_s,
            delay_step_ms=round(settings.login_delay_step_s * 1000),
            delay_max_ms=round(settings.login_delay_max_s * 1000),
        )


def config_lines(
    plugin: Path, passwords: Path, accounts: Path, stats: Path, options: PluginOptions
) -> list[str]:
    """mosquitto.conf lines that load the plugin; it must come before password_file."""
    return [
        f"plugin {plugin}",
        f"plugin_opt_password_file {passwords}",
        f"plugin_opt_accounts_file {accounts}",
        f"plugin_opt_stats_file {stats}",
        f"plugin_opt_delay_after {options.delay_after}",
        f"plugin_opt_lockout_after {options.lockout_after}",
        f"plugin_opt_lockout_s {options.lockout_s}",
        f"plugin_opt_window_s {options.window_s}",
        f"plugin_opt_delay_step_ms {options.delay_step_ms}",
        f"plugin_opt_delay_max_ms {options.delay_max_ms}",
        *(f"plugin_opt_retain_filter {f}" for f in RETAINABLE_FILTERS),
    ]


def render_accounts_file(accounts: Iterable[BrokerAccount]) -> str:
    """``<username> <kind> <share>`` per line, share 1 when ``may_join_shared_group``.

    The plugin learns from it which accounts are terminals (their client id must be
    their serial) and which may join ``$share`` groups; the rule itself stays in
    ``broker.acl``.
    """
    lines = ["# Written by `tms broker` from the database; edits are overwritten."]
    for account in accounts:
        share = int(may_join_shared_group(account.kind))
        lines.append(f"{account.username} {account.kind.value} {share}")
    return "\n".join(lines) + "\n"


def read_stats(path: Path) -> dict[str, int]:
    """The plugin's counters (failures, lockouts, ...); written at most once a second."""
    stats: dict[str, int] = {}
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return stats
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if value.isdigit():
            stats[name] = int(value)
    return stats


def _source_digest() -> str:
    digest = hashlib.sha256()
    for name in ("tms_auth.c", "Makefile"):
        digest.update((SOURCE_DIR / name).read_bytes())
    return digest.hexdigest()


def _check_build_tools() -> None:
    missing = [package for header, package in _BUILD_HEADERS.items() if not Path(header).exists()]
    missing += [tool for tool in ("cc", "make") if shutil.which(tool) is None]
    if missing:
        raise MosquittoError(
            f"cannot build the TMS Mosquitto plugin (missing: {', '.join(missing)}): "
            f"{_INSTALL_HINT}. TMS will not run Mosquitto without it."
        )


def build_plugin(directory: Path) -> Path:
    """``directory/tms_auth.so``, compiled now unless it is already built from this source.

    The build goes to a private directory and is renamed into place, so concurrent
    starts never load a half-written library. Raises MosquittoError when it cannot.
    """
    target = directory / PLUGIN_NAME
    stamp = directory / f"{PLUGIN_NAME}.source-sha256"
    digest = _source_digest()
    if target.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return target
    _check_build_tools()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as build_dir:
        result = subprocess.run(
            ["make", "--no-print-directory", "-C", str(SOURCE_DIR), f"OUT={build_dir}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise MosquittoError(
                "building the TMS Mosquitto plugin failed; TMS will not run Mosquitto "
                f"without it ({_INSTALL_HINT}):\n{result.stdout}{result.stderr}"
            )
        built = Path(build_dir) / PLUGIN_NAME
        os.chmod(built, 0o755)
        os.replace(built, target)
    stamp.write_text(digest + "\n")
    return target
