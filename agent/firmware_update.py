"""A firmware update of the TC-200: download, verify, install, and what the terminal says after.

``FirmwareUpdater.update`` runs one ``firmware`` command's arguments through the states
downloading, downloaded, verified, installing, rebooting and one of succeeded, failed,
rolled_back, reporting each to a callback. Nothing reaches the TC-200 beyond GET_INFO
until the image's size, SHA-256 and Ed25519 signature match the signed manifest and
the manifest names the terminal's model. What the answers mean (the verdict after the
boot, the checks before the install) is pure, in agent/firmware_outcome.py.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.commands import CommandFailed
from agent.errors import AgentError, TerminalFault
from agent.firmware_download import (
    Credentials,
    DownloadFailed,
    DownloadOptions,
    DownloadProgress,
    DownloadSource,
    download_image,
    image_paths,
)
from agent.firmware_outcome import (
    Progress,
    ProgressSink,
    UpdateState,
    Verdict,
    already_installed,
    judge_boot,
    refuse_unless_fits,
)
from agent.tc200_protocol import DeviceInfo
from agent.terminal import UsbTerminal
from agent.usb_driver import TC200Driver
from shared.command_catalog import FirmwareArgs
from shared.firmware_signature import (
    FirmwareRejected,
    load_public_key,
    verify_image,
    verify_signature,
)
from shared.settings import AgentSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class Runner(Protocol):
    """Runs a blocking driver call: in a worker thread for a real USB terminal."""

    def __call__(self, operation: Callable[[], T], /) -> Awaitable[T]: ...


Fetch = Callable[..., Path]  # download_image's signature


@dataclass(frozen=True, slots=True)
class FirmwareOptions:
    public_key: Path
    directory: Path
    credentials: Credentials
    download: DownloadOptions = DownloadOptions()
    boot_wait_s: float = 120.0
    poll_s: float = 0.5

    @classmethod
    def from_settings(
        cls, settings: AgentSettings, state_dir: Path, serial: str, secret: str
    ) -> FirmwareOptions | None:
        """None without ``[agent] firmware_public_key``: the agent refuses updates."""
        if settings.firmware_public_key is None:
            return None
        context = None
        if settings.firmware_tls_ca is not None:
            try:
                context = ssl.create_default_context(cafile=str(settings.firmware_tls_ca))
            except (OSError, ssl.SSLError) as exc:
                raise AgentError(
                    f"cannot load {settings.firmware_tls_ca}: {exc}; check [agent] "
                    "firmware_tls_ca (TMS_AGENT_FIRMWARE_TLS_CA)"
                ) from exc
        return cls(
            public_key=settings.firmware_public_key,
            directory=settings.firmware_dir or state_dir / "firmware",
            credentials=Credentials(serial, secret),
            download=DownloadOptions(
                read_timeout_s=settings.firmware_read_timeout_s, ssl_context=context
            ),
            boot_wait_s=settings.firmware_boot_wait_s,
        )


@dataclass
class UpdateReport:
    """The firmware command's result (agent/PROTOCOL.md)."""

    version: str
    verdict: Verdict = Verdict(UpdateState.FAILED)
    version_before: str | None = None
    already_installed: bool = False
    states: list[Progress] = field(default_factory=list)

    def output(self) -> dict[str, Any]:
        return {
            "outcome": self.verdict.state.value,
            "version": self.version,
            "version_before": self.version_before,
            "version_after": self.verdict.version_after,
            "failure": self.verdict.failure,
            "reason": self.verdict.reason,
            "already_installed": self.already_installed,
            "states": [{"state": p.state.value, "at": p.at.isoformat()} for p in self.states],
        }


class FirmwareUpdateFailed(CommandFailed):
    """A failed or rolled-back update: an ``error`` result whose output is the report."""

    def __init__(self, report: UpdateReport) -> None:
        super().__init__(f"{report.verdict.state.value}: {report.verdict.reason}")
        self.output = report.output()


class _Stop(Exception):
    def __init__(self, failure: str, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure


class FirmwareUpdater:
    """One update of one terminal; ``update`` is the whole firmware command."""

    def __init__(
        self,
        terminal: UsbTerminal,
        options: FirmwareOptions,
        *,
        run: Runner,
        on_progress: ProgressSink,
        fetch: Fetch = download_image,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._terminal = terminal
        self._options = options
        self._run = run
        self._on_progress = on_progress
        self._fetch = fetch
        self._clock = clock
        self._sleep = sleep

    async def update(self, args: FirmwareArgs) -> UpdateReport:
        report = UpdateReport(args.version)
        try:
            report.verdict = await self._update(args, report)
        except _Stop as stop:
            report.verdict = Verdict(UpdateState.FAILED, failure=stop.failure, reason=str(stop))
        except FirmwareRejected as exc:
            report.verdict = Verdict(UpdateState.FAILED, failure=exc.reason, reason=str(exc))
        if not report.states or report.states[-1].state is not report.verdict.state:
            self._report(report, report.verdict.state)
        return report

    def _report(
        self, report: UpdateReport, state: UpdateState, percent: float | None = None
    ) -> None:
        progress = Progress(report.version, state, percent)
        if not report.states or report.states[-1].state is not state:
            report.states.append(progress)
        self._on_progress(progress)

    async def _update(self, args: FirmwareArgs, report: UpdateReport) -> Verdict:
        manifest = args.manifest()
        before = await self._device(lambda: self._terminal.call(TC200Driver.device_info))
        report.version_before = before.firmware
        if already_installed(manifest, before):
            report.already_installed = True
            return Verdict(UpdateState.SUCCEEDED, before.firmware)
        refuse_unless_fits(manifest, before)
        key = self._public_key()
        # Before any byte is downloaded: a manifest nobody signed is not worth fetching.
        verify_signature(manifest, args.signature, key)
        path = await self._download(args, report)
        self._report(report, UpdateState.DOWNLOADED)
        try:
            image = path.read_bytes()
        except OSError as exc:
            raise _Stop("disk", f"cannot read the downloaded image {path}: {exc}") from exc
        try:
            verify_image(manifest, args.signature, key, image)
        except FirmwareRejected:
            path.unlink(missing_ok=True)  # the next try downloads it again
            raise
        self._report(report, UpdateState.VERIFIED)
        if args.download_only:
            return Verdict(UpdateState.VERIFIED, before.firmware)  # the file stays for later
        verdict = await self._install(image, manifest.version, before, report)
        if verdict.state is UpdateState.SUCCEEDED:
            path.unlink(missing_ok=True)  # a store PC's disk is small; a rollback keeps it
        return verdict

    async def _device(self, operation: Callable[[], T]) -> T:
        try:
            return await self._run(operation)
        except TerminalFault as fault:
            raise _Stop("device", f"the TC-200 does not answer: {fault}") from fault

    def _public_key(self) -> Ed25519PublicKey:
        path = self._options.public_key
        try:
            return load_public_key(path.read_bytes())
        except OSError as exc:
            raise _Stop(
                "key", f"cannot read the firmware public key {path}: {exc.strerror}"
            ) from exc

    async def _download(self, args: FirmwareArgs, report: UpdateReport) -> Path:
        self._report(report, UpdateState.DOWNLOADING, 0.0)
        directory = self._options.directory
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()

        def downloaded(done: int, size: int) -> None:  # in the download's thread
            percent = float(done * 100 // size)
            loop.call_soon_threadsafe(self._report, report, UpdateState.DOWNLOADING, percent)

        progress: DownloadProgress = downloaded
        try:
            _forget_other_images(directory, args.version)
            return await asyncio.to_thread(
                self._fetch,
                sources_of(args, self._options.credentials),
                directory,
                args.version,
                args.size,
                options=self._options.download,
                progress=progress,
                cancelled=cancelled,
            )
        except asyncio.CancelledError:
            cancelled.set()  # the agent is stopping: the thread ends after its read
            raise
        except DownloadFailed as exc:
            raise _Stop(exc.reason, str(exc)) from exc
        except OSError as exc:  # the firmware directory itself
            raise _Stop("disk", f"cannot write the image in {directory}: {exc}") from exc

    async def _install(
        self, image: bytes, version: str, before: DeviceInfo, report: UpdateReport
    ) -> Verdict:
        self._report(report, UpdateState.INSTALLING)
        try:
            await self._run(lambda: self._terminal.call(lambda d: d.transfer_firmware(image)))
        except TerminalFault as fault:
            await self._abort()
            raise _Stop("transfer", f"the transfer to the TC-200 failed: {fault}") from fault
        self._report(report, UpdateState.REBOOTING)

        def boot(driver: TC200Driver) -> TC200Driver:
            driver.boot_firmware()
            return driver

        try:
            booted_on = await self._run(lambda: self._terminal.call(boot))
        except TerminalFault as fault:
            # It may have restarted before it answered: what it says afterwards decides.
            log.warning("FIRMWARE_BOOT of %s: %s", version, fault)
            booted_on = None
        after, fault_text = await self._wait_for_restart(booted_on)
        return judge_boot(version, before, after, fault_text, self._options.boot_wait_s)

    async def _abort(self) -> None:
        try:
            await self._run(lambda: self._terminal.call(TC200Driver.abort_firmware))
        except TerminalFault as fault:
            log.info("FIRMWARE_ABORT after a failed transfer: %s", fault)

    async def _wait_for_restart(
        self, booted_on: TC200Driver | None
    ) -> tuple[DeviceInfo | None, str | None]:
        """GET_INFO from the restarted terminal, or None and why not by the deadline.

        An answer over the link that sent FIRMWARE_BOOT comes from before the restart
        and is not the verdict: only one over a link opened again counts (the old
        handle dies when the terminal leaves the bus, whoever notices it first, this
        loop or the heartbeat's reads).
        """
        deadline = self._clock() + self._options.boot_wait_s
        fault: str | None = "it did not leave the bus to restart"

        def ask(driver: TC200Driver) -> tuple[DeviceInfo, TC200Driver]:
            return driver.device_info(), driver

        while True:
            try:
                info, driver = await self._run(lambda: self._terminal.call(ask))
            except TerminalFault as exc:
                fault = str(exc)
            else:
                if driver is not booted_on:
                    return info, None
            if self._clock() >= deadline:
                return None, fault
            await self._sleep(self._options.poll_s)


def _forget_other_images(directory: Path, version: str) -> None:
    """Only one image is kept: a store PC's disk is not a firmware library."""
    if not directory.is_dir():
        return
    keep = set(image_paths(directory, version))
    for path in list(directory.glob("*.part")) + list(directory.glob("*.img")):
        if path not in keep:
            path.unlink(missing_ok=True)


def sources_of(args: FirmwareArgs, credentials: Credentials) -> Sequence[DownloadSource]:
    """Mirror first (no credentials), then the console (the terminal's login)."""
    console = DownloadSource(args.url, credentials)
    if args.mirror_url is None:
        return [console]
    return [DownloadSource(args.mirror_url), console]
