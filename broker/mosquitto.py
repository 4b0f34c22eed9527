"""The embedded Mosquitto: its files, written atomically, and its process.

Mosquitto reads its password and ACL files at start and on SIGHUP; a reload also
disconnects live sessions whose account was removed (see MEASURED.md), which is how a
revoked credential takes effect within a second, without a restart. The TMS plugin
(``broker.auth_plugin``) is loaded before them and re-reads the same files on SIGHUP.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from broker import auth_plugin
from broker.acl import AclAccount, mosquitto_acl_text
from broker.auth_plugin import PluginOptions
from broker.bridge import bridge_lines
from broker.certs import TlsFiles
from broker.errors import MosquittoError
from registry.provisioning import BrokerAccount
from shared.credentials import mosquitto_password_entry
from shared.lifetime import preexec_die_with_parent
from shared.ports import port_accepts
from shared.settings import BridgeSettings, BrokerSettings

log = logging.getLogger(__name__)

# As root, TMS starts Mosquitto as this user, so the password and ACL files and the
# persistence directory must be its own.
MOSQUITTO_USER = "mosquitto"
RELOAD_LOG_LINE = b"Reloading config."
_SAFE_USERNAME = re.compile(r"^[^\s:#+/\x00-\x1f]{1,64}$")


@dataclass(frozen=True, slots=True)
class MosquittoFiles:
    """Where one broker instance keeps everything, all inside ``directory``."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def passwords(self) -> Path:
        return self.directory / "passwords"

    @property
    def acl(self) -> Path:
        return self.directory / "acl"

    @property
    def accounts(self) -> Path:
        return self.directory / "accounts"

    @property
    def plugin_stats(self) -> Path:
        return self.directory / "tms_auth.stats"

    @property
    def log(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def persistence(self) -> Path:
        return self.directory / "data"

    @property
    def tls_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def bridge_ca(self) -> Path:
        return self.directory / "bridge-ca.pem"

    @property
    def tls_key(self) -> Path:
        return self.directory / "server.key"


@dataclass(frozen=True, slots=True)
class TlsListener:
    """The TLS listener terminals use, with the files ``tms certs init`` made."""

    host: str
    port: int
    files: TlsFiles


def _tls_lines(tls: TlsListener | None, files: MosquittoFiles) -> list[str]:
    if tls is None:
        return []
    return [
        f"listener {tls.port} {tls.host}",
        f"certfile {files.tls_cert}",
        f"keyfile {files.tls_key}",
        "tls_version tlsv1.2",
    ]


DEFAULT_MAX_QUEUED = BrokerSettings.model_fields["max_queued_messages"].default
DEFAULT_MAX_PACKET = BrokerSettings.model_fields["max_packet_bytes"].default
DEFAULT_AUTOSAVE_S = BrokerSettings.model_fields["autosave_s"].default


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """The built TMS plugin and its options."""

    library: Path
    options: PluginOptions


def render_config(
    host: str,
    port: int,
    files: MosquittoFiles,
    plugin: PluginConfig,
    tls: TlsListener | None = None,
    max_queued_messages: int = DEFAULT_MAX_QUEUED,
    max_packet_bytes: int = DEFAULT_MAX_PACKET,
    autosave_s: int = DEFAULT_AUTOSAVE_S,
    bridge: BridgeSettings | None = None,
) -> str:
    return "\n".join(
        [
            "# Written by `tms broker`; edit the TMS settings instead.",
            # One set of accounts and rules for every listener.
            "per_listener_settings false",
            f"listener {port} {host}",
            *_tls_lines(tls, files),
            "allow_anonymous false",
            # The plugin is asked first and only refuses; password_file and acl_file admit.
            *auth_plugin.config_lines(
                plugin.library, files.passwords, files.accounts, files.plugin_stats, plugin.options
            ),
            f"password_file {files.passwords}",
            f"acl_file {files.acl}",
            "persistence true",
            f"persistence_location {files.persistence}/",
            # Without it the state is written only at a clean exit (and every 30 min): a
            # SIGKILL lost every queued message and ingest's session with them. In
            # seconds (autosave_on_changes stays false, which would make it a count of
            # changes); each save writes the whole file, so a large backlog costs more.
            f"autosave_interval {autosave_s}",
            # Ingest acknowledges only after its batch is committed, so a burst must wait
            # in its session queue rather than be dropped at Mosquitto's default of 1000,
            # and enough messages must be in flight to cover a worker's receive-to-commit
            # cycle at full rate (docs/ingest.md: 5,000 throttled 10,000 msg/s).
            f"max_queued_messages {max_queued_messages}",
            "max_inflight_messages 20000",
            # Bigger packets disconnect their client before they are read in whole.
            f"max_packet_size {max_packet_bytes}",
            # stderr is unbuffered and goes to the log file this process opened, so the
            # reload line can be awaited and no permission is needed to write the log.
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            # Last: a connection block takes every line after it as its own.
            *bridge_lines(bridge or BridgeSettings(), files.bridge_ca),
            "",
        ]
    )


def loadable_accounts(accounts: Iterable[BrokerAccount]) -> list[BrokerAccount]:
    loadable = []
    for account in accounts:
        if not _SAFE_USERNAME.match(account.username):
            # A ':', space or newline would corrupt the files; such names cannot be created here.
            log.warning("not loading broker account with unusable name %r", account.username)
            continue
        loadable.append(account)
    return loadable


def render_password_file(accounts: Iterable[BrokerAccount]) -> str:
    lines = [mosquitto_password_entry(a.username, a.secret) for a in loadable_accounts(accounts)]
    return "\n".join(lines) + "\n"


def render_acl_file(accounts: Iterable[BrokerAccount]) -> str:
    return mosquitto_acl_text(AclAccount(a.username, a.kind) for a in accounts)


def find_binary(name: str) -> str:
    """Resolve the configured binary; /usr/sbin is searched too as it is often not on PATH."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        raise MosquittoError(
            f"Mosquitto not found ({name!r}): install it with `apt-get install mosquitto`, "
            "or set [broker] mosquitto_binary to its path"
        )
    return found


def _owner() -> tuple[int, int] | None:
    """The uid/gid Mosquitto runs as when we are root; None: as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(MOSQUITTO_USER)
    except KeyError as exc:
        raise MosquittoError(
            f"running as root but there is no {MOSQUITTO_USER!r} user for Mosquitto to switch"
            " to; reinstall the mosquitto package"
        ) from exc
    return entry.pw_uid, entry.pw_gid


def write_atomically(path: Path, text: str, mode: int, owner: tuple[int, int] | None) -> None:
    """Replace ``path`` in one rename, so Mosquitto never reads a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_reachable(directory: Path) -> None:
    # The unprivileged mosquitto user must be able to walk down to its directory.
    for parent in directory.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise MosquittoError(
                f"{parent} is not searchable by other users, so Mosquitto (user "
                f"{MOSQUITTO_USER}) cannot reach {directory}: `chmod o+x {parent}` or choose "
                "another data directory"
            )


class MosquittoProcess:
    """One Mosquitto child process serving ``host:port`` from ``files``."""

    def __init__(
        self,
        binary: str,
        files: MosquittoFiles,
        host: str,
        port: int,
        tls: TlsListener | None = None,
        plugin_options: PluginOptions | None = None,
        plugin_dir: Path | None = None,
        max_queued_messages: int = DEFAULT_MAX_QUEUED,
        max_packet_bytes: int = DEFAULT_MAX_PACKET,
        autosave_s: int = DEFAULT_AUTOSAVE_S,
        bridge: BridgeSettings | None = None,
    ) -> None:
        self.binary = binary
        self.bridge = bridge or BridgeSettings()
        self.autosave_s = autosave_s
        self.max_queued_messages = max_queued_messages
        self.max_packet_bytes = max_packet_bytes
        self.files = files
        self.plugin_options = plugin_options or PluginOptions.from_settings(BrokerSettings())
        self.plugin_dir = plugin_dir or files.directory / "plugin"
        self.host = host
        self.port = port
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self._owner: tuple[int, int] | None = None

    def prepare(self, check_binary: bool = True) -> None:
        """Create the directory and the config file, owned by Mosquitto's user."""
        if check_binary:
            self.binary = find_binary(self.binary)
        self._owner = _owner()
        self.files.directory.mkdir(parents=True, exist_ok=True)
        self.files.persistence.mkdir(exist_ok=True)
        os.chmod(self.files.directory, 0o755)
        os.chmod(self.files.persistence, 0o700)
        if self._owner is not None:
            _check_reachable(self.files.directory)
            os.chown(self.files.directory, *self._owner)
            os.chown(self.files.persistence, *self._owner)
        # Fail closed: without the plugin there is no brute-force throttle, and
        # client-id takeovers and $share subscriptions would be allowed.
        library = auth_plugin.build_plugin(self.plugin_dir)
        if self._owner is not None:
            _check_reachable(self.plugin_dir)
        if self.tls is not None:
            # Copies Mosquitto's user can read; the CA key stays where it is.
            cert = self.tls.files.server_cert.read_text()
            key = self.tls.files.server_key.read_text()
            write_atomically(self.files.tls_cert, cert, 0o644, self._owner)
            write_atomically(self.files.tls_key, key, 0o600, self._owner)
        if self.bridge.cafile is not None:
            try:
                ca = self.bridge.cafile.read_text()
            except OSError as exc:
                raise MosquittoError(
                    f"cannot read the core broker's CA {self.bridge.cafile} ([broker.bridge]"
                    f" cafile): {exc.strerror}"
                ) from exc
            write_atomically(self.files.bridge_ca, ca, 0o644, self._owner)
        plugin = PluginConfig(library, self.plugin_options)
        config = render_config(
            self.host,
            self.port,
            self.files,
            plugin,
            self.tls,
            self.max_queued_messages,
            self.max_packet_bytes,
            self.autosave_s,
            self.bridge,
        )
        # With a bridge the file holds the bridge account's password.
        mode = 0o600 if self.bridge.address else 0o644
        write_atomically(self.files.config, config, mode, self._owner)

    def write_accounts(self, accounts: list[BrokerAccount]) -> None:
        loadable = loadable_accounts(accounts)
        accounts_text = auth_plugin.render_accounts_file(loadable)
        write_atomically(self.files.accounts, accounts_text, 0o600, self._owner)
        write_atomically(self.files.passwords, render_password_file(loadable), 0o600, self._owner)
        write_atomically(self.files.acl, render_acl_file(loadable), 0o600, self._owner)

    def start(self, timeout: float = 60.0) -> None:
        """Start Mosquitto and return once its port accepts connections."""
        # Started as its own user rather than left to drop root by itself: a change
        # of user id clears the parent-death signal, and Mosquitto must not outlive
        # a `tms broker` killed with SIGKILL (holding the port and the sessions).
        uid, gid = self._owner if self._owner is not None else (None, None)
        # Its supplementary groups too, as Mosquitto's own switch (initgroups) keeps them.
        groups = None if gid is None else os.getgrouplist(MOSQUITTO_USER, gid)
        with self.files.log.open("ab") as log_file:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.files.config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                user=uid,
                group=gid,
                extra_groups=groups,
                preexec_fn=preexec_die_with_parent(signal.SIGTERM),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MosquittoError(
                    f"Mosquitto exited at start-up with code {self.process.returncode}:\n"
                    + self.log_tail()
                )
            if port_accepts(self.host, self.port):
                log.info("mosquitto (pid %d) listening on %s:%d", self.process.pid, *self.address)
                return
            time.sleep(0.05)
        self.stop()
        raise MosquittoError(
            f"Mosquitto did not listen on {self.host}:{self.port} within {timeout:.0f} s:\n"
            + self.log_tail()
        )

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def exit_code(self) -> int | None:
        """None while running; the exit code once it has stopped."""
        return None if self.process is None else self.process.poll()

    def reload(self, timeout: float = 30.0) -> None:
        """SIGHUP, then wait until Mosquitto logs that it re-read its files.

        The reload runs in Mosquitto's single event loop, so once the line is logged
        every later connection and message is checked against the new files.
        """
        if self.process is None or self.process.poll() is not None:
            raise MosquittoError("cannot reload Mosquitto: it is not running")
        offset = self._log_size()
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while not self._logged_since(offset, RELOAD_LOG_LINE):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise MosquittoError(
                    "Mosquitto did not confirm the reload of its password/ACL files:\n"
                    + self.log_tail()
                )
            time.sleep(0.01)

    def _log_size(self) -> int:
        try:
            return self.files.log.stat().st_size
        except FileNotFoundError:
            return 0

    def _logged_since(self, offset: int, line: bytes) -> bool:
        try:
            with self.files.log.open("rb") as handle:
                handle.seek(offset)
                return line in handle.read()
        except FileNotFoundError:
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it will not go); return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("mosquitto did not stop within %.0f s; killing it", timeout)
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.files.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def write_operator_config(
    files: MosquittoFiles,
    settings: BrokerSettings,
    accounts: list[BrokerAccount],
    tls: TlsFiles | None,
) -> None:
    """The files `tms broker` would use, for a Mosquitto that an operator runs."""
    listener = TlsListener(settings.tls_host, settings.tls_port, tls) if tls else None
    process = MosquittoProcess(
        settings.mosquitto_binary,
        files,
        settings.host,
        settings.port,
        listener,
        PluginOptions.from_settings(settings),
        settings.mosquitto_plugin_dir,
        settings.max_queued_messages,
        settings.max_packet_bytes,
        settings.autosave_s,
        settings.bridge,
    )
    process.prepare(check_binary=False)
    process.write_accounts(accounts)
