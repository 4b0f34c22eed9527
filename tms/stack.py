"""The platform on one host, as `tms up` runs it: every part started in order, restarted
when it dies (tms/supervision.py), and stopped in reverse order on Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlmodel import Session

from agent.sim.fleet_file import FleetFirmware, load_fleet_file, write_fleet_file
from broker.certs import TlsFiles
from rollouts.errors import FirmwareError
from rollouts.library import read_signing_key, write_signing_key
from shared import schema
from shared.db import make_engine
from shared.errors import TMSError
from shared.firmware_signature import generate_key, private_key_pem, public_key_pem
from shared.models import AccountKind
from shared.platform_status import STATUS_FILE_NAME
from shared.ports import PortInUseError, ensure_port_free
from shared.settings import MqttClientSettings, Settings
from tms.backup_daily import daily_backup_child
from tms.children import Child, PostgresPart
from tms.platform_database import (
    HOLDER_STOPPED,
    HOLDER_UP,
    HOLDER_UP_STARTING,
    record_database_kind,
)
from tms.platform_parts import (
    CONSOLE_ACCOUNT,
    INGEST_ACCOUNT,
    ServiceSecrets,
    UpOptions,
    service_children,
    simulator_child,
)
from tms.postgres import EmbeddedPostgres
from tms.supervision import Supervisor
from tms.supervision_policy import RestartPolicy

# How long `tms up` waits for a `tms` command using the stopped platform's database.
LOCK_WAIT_S = 30.0
# How long a port may stay taken: a platform killed a moment ago is still letting go.
PORT_SETTLE_S = 30.0


class PlatformError(TMSError):
    pass


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Secrets go to a file only the owner can read, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def simulated_serial(index: int) -> str:
    return f"SIM{index:06d}"


def ensure_signing_key(path: Path) -> bytes:
    """The PEM public half of the firmware signing key at ``path``, made first if there
    is none (owner-only, never in the database); a key already there is kept."""
    if not path.exists():
        try:
            write_signing_key(path, private_key_pem(generate_key()))
        except FirmwareError:
            pass  # another process made one meanwhile: that is the key
        except OSError as exc:
            raise PlatformError(
                f"cannot write the firmware signing key {path}: {exc.strerror}; check "
                "[firmware] signing_key (TMS_FIRMWARE_SIGNING_KEY)"
            ) from exc
    return public_key_pem(read_signing_key(path))


class Platform:
    """Owns the data directory and the processes of one `tms up`."""

    def __init__(
        self, settings: Settings, options: UpOptions, say: Callable[[str], None] = print
    ) -> None:
        self.settings = settings
        self.options = options
        self.say = say
        self.data_dir = settings.paths.data_dir
        # Locked by start(); started as self.postgres unless the database is external.
        self.cluster: EmbeddedPostgres | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.children: list[Child] = []
        self.supervisor: Supervisor | None = None
        self.admin_password: str | None = None
        self.database_url = ""
        self.killed_before = False
        self.firmware_public_key = b""

    # -- start-up -------------------------------------------------------------

    def _check_ports(self) -> None:
        s = self.settings
        if s.database.url is None:
            ensure_port_free("127.0.0.1", s.database.port, "PostgreSQL", "--db-port")
        ensure_port_free(s.broker.host, s.broker.port, "MQTT broker", "--broker-port")
        ensure_port_free(s.console.host, s.console.port, "console", "--console-port")
        if s.ingest.metrics_port:
            ensure_port_free(
                s.ingest.metrics_host, s.ingest.metrics_port, "ingest metrics", "--metrics-port"
            )
        if self._tls().server_ready():
            ensure_port_free(
                s.broker.tls_host, s.broker.tls_port, "MQTT TLS", "TMS_BROKER_TLS_PORT"
            )

    def _tls(self) -> TlsFiles:
        return TlsFiles(self.settings.broker.certs_dir or self.data_dir / "certs")

    def _secrets(self) -> dict[str, Any]:
        path = self.data_dir / "secrets.json"
        stored = _read_json(path)
        changed = False
        for key in ("database_password", "console_secret_key"):
            if key not in stored:
                stored[key] = secrets.token_urlsafe(32)
                changed = True
        if changed:
            _write_private_json(path, stored)
        return stored

    def _take_lock(self) -> None:
        """Before anything else: one `tms up` per data directory, and a `tms` command
        that has the stopped platform's database open finishes first."""
        self.cluster = EmbeddedPostgres(self.data_dir / "postgres", self.settings.database.port, "")
        previous = self.cluster.lock_holder()
        if self.cluster.lock(wait_s=LOCK_WAIT_S, holder=HOLDER_UP_STARTING):
            # The last `tms up` here did not stop cleanly: its parts may hold our ports
            # for a few seconds more while they drain.
            self.killed_before = previous is not None and previous[1].startswith("up")
            return
        holder = self.cluster.lock_holder()
        if holder is not None and holder[1].startswith("up"):
            who = f"another `tms up` (pid {holder[0]}) is running"
        elif holder is not None:
            who = f"a `tms` command (pid {holder[0]}) has held it for {LOCK_WAIT_S:.0f} s"
        else:
            who = "another process holds it"
        raise PlatformError(
            f"cannot take the data directory {self.data_dir}: {who}; stop it, or choose "
            "another directory with --data-dir"
        )

    def _check_ports_settled(self) -> None:
        """The ports, allowing a platform killed a moment ago to let go of them."""
        deadline = time.monotonic() + (PORT_SETTLE_S if self.killed_before else 0.0)
        while True:
            try:
                self._check_ports()
                return
            except PortInUseError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _start_database(self, stored: dict[str, Any]) -> None:
        if self.settings.database.url is not None:
            self.database_url = self.settings.database.url.get_secret_value()
            return
        assert self.cluster is not None
        self.cluster.password = stored["database_password"]
        # The server is a second object on the same cluster: it holds no lock, so
        # stopping it (or a restart that fails) never lets go of the data directory,
        # which self.cluster keeps locked for as long as `tms up` runs.
        self.postgres = EmbeddedPostgres(
            self.cluster.root, self.cluster.port, stored["database_password"]
        )
        self.postgres.start()
        self.database_url = self.postgres.url

    def _prepare_database(self) -> tuple[str | None, str, str]:
        """Migrate, create the first admin once, and fresh secrets for the services."""
        from console.users import ensure_initial_admin
        from registry.provisioning import ensure_service_account

        schema.upgrade(self.database_url)
        engine = make_engine(self.database_url, pool_size=1)
        try:
            admin_password = ensure_initial_admin(engine)
            with Session(engine) as session:
                # Service secrets are rotated on every start, so none is stored on disk.
                ingest_secret = ensure_service_account(session, AccountKind.INGEST, INGEST_ACCOUNT)
                console_secret = ensure_service_account(
                    session, AccountKind.CONSOLE, CONSOLE_ACCOUNT
                )
                session.commit()
        finally:
            engine.dispose()
        return admin_password, ingest_secret, console_secret

    def _fleet_credentials(self) -> Path:
        """Provision SIM000001.. up to --simulate N; secrets kept for the simulator only."""
        from registry.provisioning import provision_terminal, rotate_secret

        path = self.data_dir / "simulator" / "credentials.json"
        known = dict(load_fleet_file(path).credentials()) if path.exists() else {}
        wanted = [simulated_serial(i) for i in range(1, self.options.simulate + 1)]
        # (number, serial): four simulated terminals share a store, by number.
        missing = [(n, serial) for n, serial in enumerate(wanted, 1) if serial not in known]
        if missing:
            engine = make_engine(self.database_url, pool_size=1)
            try:
                with Session(engine) as session:
                    existing = set(session.exec(_serials_query([s for _, s in missing])).all())
                    for index, (number, serial) in enumerate(missing):
                        if serial in existing:
                            known[serial] = rotate_secret(session, serial)
                        else:
                            store = f"STORE-{(number - 1) // 4 + 1:05d}"
                            known[serial] = provision_terminal(
                                session, serial, self.settings.simulate.customer, store
                            )
                        if index % 500 == 499:
                            session.commit()
                    session.commit()
            finally:
                engine.dispose()
        broker = self.settings.broker
        write_fleet_file(
            path,
            [(serial, known[serial]) for serial in wanted],
            MqttClientSettings(host=broker.host, port=broker.port),
            self._fleet_firmware(path.parent),
        )
        return path

    def _fleet_firmware(self, directory: Path) -> FleetFirmware:
        """The platform's public key beside the fleet's credentials, where its agents
        read it; written on every start, so it follows a key replaced meanwhile."""
        public_key = directory / "firmware-public.pem"
        directory.mkdir(parents=True, exist_ok=True)
        public_key.write_bytes(self.firmware_public_key)
        return FleetFirmware(public_key=public_key, directory=directory / "firmware")

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        assert self.cluster is not None
        stored = self._secrets()
        signing_key = self.settings.firmware.signing_key_in(self.data_dir)
        self.firmware_public_key = ensure_signing_key(signing_key)
        external = self.settings.database.url is not None
        record_database_kind(self.data_dir, external)
        if not external and self.cluster.is_initialized():
            self.cluster.stop_leftover()
        self._check_ports_settled()
        self._start_database(stored)
        admin_password, ingest_secret, console_secret = self._prepare_database()
        # Migrated and provisioned: `tms` commands in other shells may use it now.
        self.cluster.set_holder(HOLDER_UP)
        self.children = service_children(
            self.settings,
            self.database_url,
            ServiceSecrets(ingest_secret, console_secret, stored["console_secret_key"]),
            self.status_file,
        )
        backup = daily_backup_child(self.settings, self.database_url)
        if backup is not None:
            self.children.append(backup)
        if self.options.simulate:
            self.children.append(
                simulator_child(self.data_dir, self.options, self._fleet_credentials())
            )
        self.admin_password = admin_password
        self.supervisor = self._supervisor()

    @property
    def status_file(self) -> Path:
        return self.data_dir / STATUS_FILE_NAME

    def _supervisor(self) -> Supervisor:
        s = self.settings.supervision
        policy = RestartPolicy(
            first_delay_s=s.restart_delay_s,
            max_delay_s=max(s.restart_delay_max_s, s.restart_delay_s),
            healthy_after_s=s.healthy_after_s,
            give_up_after=s.give_up_after,
        )
        supervisor = Supervisor(
            self.children, policy, s.start_timeout_s, self.status_file, say=self.say
        )
        if self.postgres is not None:
            supervisor.adopt(PostgresPart(self.postgres))
        return supervisor

    def _banner(self, admin_password: str | None) -> None:
        s = self.settings
        lines = ["", "TMS is up.", f"  Console   http://{s.console.host}:{s.console.port}"]
        if admin_password:
            lines.append(
                f"            first run: log in as 'admin' with password {admin_password}"
                " (shown only this once)"
            )
        broker_name = "Mosquitto" if s.broker.kind == "mosquitto" else "amqtt"
        lines.append(
            f"  Broker    mqtt://{s.broker.host}:{s.broker.port} ({broker_name}; plain MQTT is "
            "for loopback development only)"
        )
        if self._tls().server_ready():
            tls = f"mqtts://{s.broker.tls_host}:{s.broker.tls_port}"
            lines.append(f"            {tls} (TLS with the private CA in {self._tls().directory})")
        else:
            lines.append("            no TLS: run `tms certs init` before terminals join a network")
        if s.ingest.metrics_port:
            lines.append(
                f"  Metrics   http://{s.ingest.metrics_host}:{s.ingest.metrics_port}/metrics"
                " (ingest, Prometheus)"
            )
        if self.postgres:
            lines.append(f"  Database  embedded PostgreSQL on 127.0.0.1:{s.database.port}")
        else:
            lines.append("  Database  external PostgreSQL (TMS_DATABASE_URL)")
        if s.backup.daily_at:
            lines.append(
                f"  Backups   daily at {s.backup.daily_at} into {s.backup.dir_in(self.data_dir)}"
            )
        if self.options.simulate:
            lines.append(f"  Fleet     {self.options.simulate} simulated TC-200 terminals")
        lines += [
            f"  Data      {self.data_dir} (logs in {self.data_dir / 'logs'})",
            f'  Health    http://{s.console.host}:{s.console.port}/healthz ("platform": each '
            f"part's state and restarts; also in {self.status_file})",
            "Press Ctrl-C to stop.",
            "",
        ]
        self.say("\n".join(lines))

    # -- running and stopping -------------------------------------------------

    def watch(self, stop: threading.Event) -> int:
        """Start the parts and keep them running until asked to stop (0), or until one
        cannot start (1); a part that dies meanwhile is restarted."""
        assert self.supervisor is not None, "start() first"
        return self.supervisor.run(stop, on_all_ready=lambda: self._banner(self.admin_password))

    def started_anything(self) -> bool:
        """Whether a process of the platform was started (and so has to be stopped)."""
        owned_database = self.postgres is not None and self.postgres.owned
        return owned_database or any(child.process is not None for child in self.children)

    def shutdown(self) -> None:
        if self.supervisor is not None:
            self.supervisor.mark("stopping")
        for child in reversed(self.children):
            if child.alive():
                self.say(f"stopping {child.name}")
            child.stop()
        if self.cluster is not None and self.cluster.holds_lock():
            # Its other parts are gone; a leftover server is what stop_leftover is for.
            self.cluster.set_holder(HOLDER_STOPPED)
        if self.postgres is not None:
            if self.postgres.owned:
                self.say("stopping PostgreSQL")
            self.postgres.stop()
        if self.supervisor is not None:
            self.supervisor.mark("stopped")
        if self.cluster is not None:
            self.cluster.unlock()


def _serials_query(serials: list[str]) -> Any:
    from sqlmodel import col, select

    from shared.models import Terminal

    return select(Terminal.serial).where(col(Terminal.serial).in_(serials))
