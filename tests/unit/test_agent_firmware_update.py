"""Firmware updates on a simulated TC-200 (the real driver on a simulated USB bus): what
installs, what rolls back, what is refused before FIRMWARE_BEGIN, and what the TC-200's
answers after the boot mean (pure). The download is replaced by a stand-in here;
tests/integration/test_agent_firmware_download.py fetches over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.commands import CommandProcessor
from agent.errors import AgentError
from agent.firmware_download import Credentials, DownloadSource, image_paths
from agent.firmware_outcome import (
    PROGRESS_EVENT,
    Progress,
    UpdateState,
    Verdict,
    judge_boot,
    outcome_event,
    progress_event,
)
from agent.firmware_update import FirmwareOptions, FirmwareUpdater, UpdateReport
from agent.frame import FrameError, decode_frame
from agent.handlers import terminal_handlers
from agent.outbox import Outbox
from agent.sim.device import SimulatedHostMetrics
from agent.sim.firmware import firmware_image
from agent.sim.usb_backend import SimulatedUsbBackend, SimulatedUsbTerminal
from agent.tc200_protocol import DeviceInfo, InfoFlags, Opcode
from agent.usb_driver import TC200Driver, open_terminal
from shared import topics
from shared.command_catalog import FirmwareArgs, check_args
from shared.firmware_signature import FirmwareManifest, generate_key, public_key_pem, sign
from shared.messages import (
    Command,
    CommandStatus,
    Event,
    EventSeverity,
    parse_message,
    utcnow,
)
from shared.settings import AgentSettings, MqttClientSettings

SERIAL = "TC200-FW1"
URL = "http://console.test/api/v1/firmware/{version}/image"
T = TypeVar("T")


class FakeClock:
    """Time for the update's deadline and the simulated bus: it moves only when slept."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.on_sleep: Callable[[], None] | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()


async def inline(operation: Callable[[], T]) -> T:
    return operation()


class Rig:
    """One simulated TC-200, the frames it received, a signing key and a stand-in download."""

    def __init__(self, tmp_path: Path, clock: Callable[[], float] | None = None) -> None:
        self.clock = FakeClock()
        self.backend = SimulatedUsbBackend.for_serial(SERIAL, clock=clock or self.clock)
        self.opcodes: list[Opcode] = []
        # True: the terminal answers on for a while after FIRMWARE_BOOT before it restarts.
        self.late_restart = False
        firmware = self.backend.firmware
        handle = firmware.handle

        def spy(request: bytes) -> bytes | None:
            with contextlib.suppress(FrameError, ValueError):
                self.opcodes.append(Opcode(decode_frame(request).opcode))
            answer = handle(request)
            if self.late_restart and self.opcodes[-1] is Opcode.FIRMWARE_BOOT:
                firmware.restart_requested = False
            return answer

        self.backend.firmware.handle = spy  # type: ignore[method-assign]
        self.terminal = SimulatedUsbTerminal(lambda: open_terminal(backend=self.backend))
        self.key = generate_key()
        public = tmp_path / "firmware.pub"
        public.write_bytes(public_key_pem(self.key))
        self.options = FirmwareOptions(
            public_key=public,
            directory=tmp_path / "firmware",
            credentials=Credentials(SERIAL, "secret"),
            boot_wait_s=30.0,
            poll_s=0.25,
        )
        self.served: dict[str, bytes] = {}  # version -> the bytes the "server" gives
        self.downloads: list[str] = []
        self.progress: list[Progress] = []

    @property
    def version(self) -> str:
        return self.device_info().firmware

    def device_info(self) -> DeviceInfo:
        return self.terminal.call(TC200Driver.device_info)

    def args(
        self,
        version: str,
        image: bytes | None = None,
        *,
        models: tuple[str, ...] = ("TC-200",),
        signed_by: Any = None,
    ) -> FirmwareArgs:
        image = firmware_image(version) if image is None else image
        self.served.setdefault(version, image)
        manifest = FirmwareManifest.of_image(version, models, image)
        checked = check_args(
            "firmware",
            {
                "version": version,
                "models": list(manifest.models),
                "size": manifest.size,
                "sha256": manifest.sha256,
                "signature": sign(manifest, signed_by or self.key),
                "url": URL.format(version=version),
            },
        )
        return FirmwareArgs.model_validate(checked)

    def fetch(
        self,
        sources: Sequence[DownloadSource],
        directory: Path,
        version: str,
        size: int,
        *,
        options: object,
        progress: Callable[[int, int], None],
        cancelled: object,
    ) -> Path:
        self.downloads.append(sources[-1].url)
        data = self.served[version]
        directory.mkdir(parents=True, exist_ok=True)
        _, complete = image_paths(directory, version)
        complete.write_bytes(data)
        progress(len(data) // 2, size)
        progress(len(data), size)
        return complete

    def update(self, args: FirmwareArgs) -> UpdateReport:
        updater = FirmwareUpdater(
            self.terminal,
            self.options,
            run=inline,
            on_progress=self.progress.append,
            fetch=self.fetch,
            clock=self.clock,
            sleep=self.clock.sleep,
        )
        return asyncio.run(updater.update(args))


def states(report: UpdateReport) -> list[str]:
    return [p.state.value for p in report.states]


def test_a_good_image_installs_and_the_terminal_reports_it(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    before = rig.version
    report = rig.update(rig.args("3.0.0"))
    assert report.verdict == Verdict(UpdateState.SUCCEEDED, "3.0.0")
    assert rig.version == "3.0.0" and rig.device_info().flags is InfoFlags.NONE
    assert report.version_before == before and rig.backend.firmware.boots == 1
    assert states(report) == [
        "downloading",
        "downloaded",
        "verified",
        "installing",
        "rebooting",
        "succeeded",
    ]
    percents = [p.percent for p in rig.progress if p.state is UpdateState.DOWNLOADING]
    assert percents == [0.0, 50.0, 100.0]
    assert rig.opcodes.count(Opcode.FIRMWARE_BEGIN) == 1
    assert rig.opcodes.index(Opcode.FIRMWARE_COMMIT) < rig.opcodes.index(Opcode.FIRMWARE_BOOT)
    assert not any(rig.options.directory.iterdir())  # the image is not kept after success
    output = report.output()
    assert output["outcome"] == "succeeded" and output["version_after"] == "3.0.0"
    assert output["reason"] is None and json.dumps(output)


def test_an_image_that_fails_its_boot_is_rolled_back_with_the_reason(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    before = rig.version
    rig.backend.firmware.fail_next_boot()
    report = rig.update(rig.args("3.0.1"))
    assert report.verdict.state is UpdateState.ROLLED_BACK
    assert report.verdict.failure == "rolled_back" and report.verdict.version_after == before
    assert "3.0.1 failed its boot self-test" in (report.verdict.reason or "")
    assert rig.version == before and rig.device_info().flags is InfoFlags.ROLLED_BACK
    assert states(report)[-2:] == ["rebooting", "rolled_back"]
    # Kept for a retry: verified again before it is used.
    assert image_paths(rig.options.directory, "3.0.1")[1].exists()


def test_an_image_that_is_not_a_tc200_image_rolls_back(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    report = rig.update(rig.args("3.0.2", b"MZ" + b"\x00" * 3000))
    assert report.verdict.state is UpdateState.ROLLED_BACK


def test_download_only_stops_at_verified_and_a_later_command_installs(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    before = rig.version
    staged = rig.update(rig.args("3.0.9").model_copy(update={"download_only": True}))
    assert staged.verdict == Verdict(UpdateState.VERIFIED, before)
    assert states(staged) == ["downloading", "downloaded", "verified"]
    assert set(rig.opcodes) == {Opcode.GET_INFO} and rig.version == before
    assert image_paths(rig.options.directory, "3.0.9")[1].exists()
    installed = rig.update(rig.args("3.0.9"))
    assert installed.verdict.state is UpdateState.SUCCEEDED and rig.version == "3.0.9"
    assert outcome_event("3.0.9", staged.verdict) is None


def test_a_tampered_image_is_refused_before_firmware_begin(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    args = rig.args("3.0.3")
    good = rig.served["3.0.3"]
    rig.served["3.0.3"] = good[:100] + bytes([good[100] ^ 1]) + good[101:]
    before = rig.version
    report = rig.update(args)
    assert report.verdict.state is UpdateState.FAILED and report.verdict.failure == "sha256"
    assert Opcode.FIRMWARE_BEGIN not in rig.opcodes and Opcode.FIRMWARE_CHUNK not in rig.opcodes
    assert set(rig.opcodes) == {Opcode.GET_INFO}  # the terminal was asked, nothing more
    assert states(report) == ["downloading", "downloaded", "failed"]
    assert rig.version == before and rig.backend.firmware.boots == 0
    # Not kept: the next try downloads it again.
    assert not image_paths(rig.options.directory, "3.0.3")[1].exists()


def test_a_longer_image_is_refused_on_its_size(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    args = rig.args("3.0.4")
    rig.served["3.0.4"] += b"\x00"
    report = rig.update(args)
    assert report.verdict.failure == "size" and Opcode.FIRMWARE_BEGIN not in rig.opcodes


def test_a_wrong_signature_is_refused_before_the_download(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    report = rig.update(rig.args("3.0.5", signed_by=generate_key()))
    assert report.verdict.state is UpdateState.FAILED and report.verdict.failure == "signature"
    assert rig.downloads == [] and Opcode.FIRMWARE_BEGIN not in rig.opcodes
    assert "signature does not match" in (report.verdict.reason or "")


def test_an_image_for_another_model_is_refused_before_the_download(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    report = rig.update(rig.args("3.0.6", models=("TC-300",)))
    assert report.verdict.failure == "model"
    assert "for TC-300, not for this terminal's model TC-200" in (report.verdict.reason or "")
    assert rig.downloads == [] and Opcode.FIRMWARE_BEGIN not in rig.opcodes


def test_a_terminal_that_never_comes_back_is_a_failure(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.clock.on_sleep = rig.backend.unplug  # off the bus for good after the boot
    started = rig.clock.now
    report = rig.update(rig.args("3.0.7"))
    assert report.verdict.state is UpdateState.FAILED and report.verdict.failure == "no_device"
    assert "did not answer within 30 s" in (report.verdict.reason or "")
    assert report.verdict.version_after is None
    assert 30 <= rig.clock.now - started <= 31


def test_answers_before_the_restart_do_not_count(tmp_path: Path) -> None:
    # The simulated terminal answers GET_INFO with the new version as soon as it has
    # taken FIRMWARE_BOOT; a real one may answer with anything until it restarts.
    rig = Rig(tmp_path)
    rig.late_restart = True
    sleeps = 0

    def restart_on_the_third_poll() -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 3:
            rig.backend.firmware.restart_requested = True

    rig.clock.on_sleep = restart_on_the_third_poll
    report = rig.update(rig.args("3.0.8"))
    assert report.verdict.state is UpdateState.SUCCEEDED
    assert rig.backend.firmware.boots == 1
    after_boot = rig.opcodes[rig.opcodes.index(Opcode.FIRMWARE_BOOT) + 1 :]
    # Three answers over the old link, then the open's and the verdict's after the restart.
    assert after_boot.count(Opcode.GET_INFO) == 5


def test_a_terminal_already_on_the_version_is_not_touched(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    current = rig.version
    report = rig.update(rig.args(current))
    assert report.verdict == Verdict(UpdateState.SUCCEEDED, current)
    assert report.already_installed and rig.downloads == []
    assert Opcode.FIRMWARE_BEGIN not in rig.opcodes and states(report) == ["succeeded"]


def test_an_unplugged_terminal_fails_before_the_download(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.backend.unplug()
    report = rig.update(rig.args("3.0.9"))
    assert report.verdict.failure == "device" and rig.downloads == []


def test_an_unreadable_public_key_is_a_failure_that_names_the_file(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.options.public_key.unlink()
    report = rig.update(rig.args("3.1.0"))
    assert report.verdict.failure == "key" and "firmware.pub" in (report.verdict.reason or "")


# What the TC-200 says after the boot (pure).

BEFORE = DeviceInfo(SERIAL, "TC-200", "2.4.1")


@pytest.mark.parametrize(
    ("after", "state", "failure"),
    [
        (DeviceInfo(SERIAL, "TC-200", "3.0.0"), UpdateState.SUCCEEDED, None),
        (
            DeviceInfo(SERIAL, "TC-200", "2.4.1", InfoFlags.ROLLED_BACK),
            UpdateState.ROLLED_BACK,
            "rolled_back",
        ),
        (DeviceInfo(SERIAL, "TC-200", "2.4.1"), UpdateState.FAILED, "not_booted"),
        (DeviceInfo(SERIAL, "TC-200", "2.9.9"), UpdateState.FAILED, "other_version"),
        (
            DeviceInfo(SERIAL, "TC-200", "3.0.0", InfoFlags.ROLLED_BACK),
            UpdateState.FAILED,
            "other_version",
        ),
        (DeviceInfo("TC200-OTHER", "TC-200", "3.0.0"), UpdateState.FAILED, "other_terminal"),
        (None, UpdateState.FAILED, "no_device"),
    ],
)
def test_judge_boot(after: DeviceInfo | None, state: UpdateState, failure: str | None) -> None:
    verdict = judge_boot("3.0.0", BEFORE, after, "unplugged", 120)
    assert (verdict.state, verdict.failure) == (state, failure)
    assert (verdict.reason is None) == (state is UpdateState.SUCCEEDED)


def test_progress_events_every_ten_percent_and_each_state() -> None:
    def event(state: UpdateState, percent: float | None = None) -> Event | None:
        return progress_event(Progress("3.0.0", state, percent))

    sent = [p for p in range(101) if event(UpdateState.DOWNLOADING, float(p)) is not None]
    assert sent == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    installing = event(UpdateState.INSTALLING)
    assert installing is not None and installing.kind == PROGRESS_EVENT
    assert installing.code == "installing"
    assert event(UpdateState.SUCCEEDED) is None  # the outcome event says it


def test_outcome_events_open_and_resolve_the_update_alert() -> None:
    failed = outcome_event("3.0.0", Verdict(UpdateState.ROLLED_BACK, "2.4.1", "rolled_back", "x"))
    ok = outcome_event("3.0.0", Verdict(UpdateState.SUCCEEDED, "3.0.0"))
    assert failed is not None and ok is not None
    # config/alerts.toml: "update" at error opens update-failed; a lower one resolves it.
    assert (failed.kind, failed.severity, failed.code) == (
        "update",
        EventSeverity.ERROR,
        "TC200-ROLLBACK",
    )
    assert (ok.kind, ok.severity) == ("update", EventSeverity.INFO)


# The command: arguments, settings, a redelivery.


def test_the_command_refuses_bad_arguments() -> None:
    good: dict[str, Any] = {
        "version": "3.0.0",
        "models": ["TC-200"],
        "size": 10,
        "sha256": "a" * 64,
        "signature": "c2ln",
        "url": "https://console.example/api/v1/firmware/3.0.0/image",
    }
    assert check_args("firmware", good) == good | {"download_only": False}
    bad_args: list[dict[str, Any]] = [
        {"url": "ftp://console.example/x"},
        {"url": "https://user:pw@console.example/x"},
        {"sha256": "A" * 64},
        {"size": 0},
        {"size": 16 * 1024 * 1024 + 1},
        {"models": []},
        {"version": "../../etc"},
        {"mirror_url": "file:///etc/passwd"},
    ]
    for bad in bad_args:
        with pytest.raises(ValueError, match="firmware: bad argument"):
            check_args("firmware", good | bad)


def test_options_come_from_the_agent_settings(tmp_path: Path) -> None:
    assert FirmwareOptions.from_settings(AgentSettings(), tmp_path, SERIAL, "s") is None
    key = tmp_path / "fw.pub"
    options = FirmwareOptions.from_settings(
        AgentSettings(firmware_public_key=key, firmware_boot_wait_s=60), tmp_path, SERIAL, "s"
    )
    assert options is not None and options.directory == tmp_path / "firmware"
    assert options.public_key == key and options.boot_wait_s == 60
    assert options.credentials == Credentials(SERIAL, "s") and "'s'" not in repr(options)
    with pytest.raises(AgentError, match="firmware_tls_ca"):
        FirmwareOptions.from_settings(
            AgentSettings(firmware_public_key=key, firmware_tls_ca=tmp_path / "none.pem"),
            tmp_path,
            SERIAL,
            "s",
        )


@dataclass
class FakeRuntime:
    serial: str = SERIAL
    mqtt: MqttClientSettings = field(default_factory=MqttClientSettings)
    tls_context: None = None
    outbox: Outbox = field(default_factory=lambda: Outbox(100))
    started_at: datetime = field(default_factory=utcnow)

    def request_restart(self) -> None:
        pass

    async def broker_round_trip_ms(self) -> float:
        return 1.0

    def events(self) -> list[Event]:
        found = []
        while (queued := self.outbox.peek()) is not None:
            self.outbox.done(queued)
            if queued.message.topic == topics.event(SERIAL):
                found.append(parse_message(Event, queued.message.payload))
        return found


def processor_for(rig: Rig, runtime: FakeRuntime, options: FirmwareOptions | None) -> Any:
    handlers = terminal_handlers(
        rig.terminal, runtime, SimulatedHostMetrics(SERIAL), lambda n: [], firmware=options
    )
    return CommandProcessor(SERIAL, handlers)


def run_command(processor: CommandProcessor, command_id: str, args: FirmwareArgs) -> Any:
    payload = Command(id=command_id, name="firmware", args=args.model_dump(mode="json"))
    reply = asyncio.run(processor.process(topics.command(SERIAL, command_id), payload.to_payload()))
    return None if reply is None else reply.result


def handler_rig(tmp_path: Path) -> tuple[Rig, FirmwareOptions]:
    """Real time (the simulated terminal is off the bus for half a second), and the
    image already downloaded: the handler takes a complete file as it is, then verifies."""
    rig = Rig(tmp_path, clock=time.monotonic)
    options = FirmwareOptions(
        public_key=rig.options.public_key,
        directory=rig.options.directory,
        credentials=rig.options.credentials,
        boot_wait_s=10.0,
        poll_s=0.05,
    )
    return rig, options


def place(rig: Rig, args: FirmwareArgs) -> None:
    rig.options.directory.mkdir(parents=True, exist_ok=True)
    image_paths(rig.options.directory, args.version)[1].write_bytes(rig.served[args.version])


def test_a_redelivered_command_is_answered_again_not_installed_twice(tmp_path: Path) -> None:
    rig, options = handler_rig(tmp_path)
    runtime = FakeRuntime()
    processor = processor_for(rig, runtime, options)
    args = rig.args("3.2.0")
    place(rig, args)
    first = run_command(processor, "fw-1", args)
    assert first.status is CommandStatus.OK, first.error
    assert first.output["outcome"] == "succeeded" and first.output["version_after"] == "3.2.0"
    again = run_command(processor, "fw-1", args)
    assert again == first and rig.backend.firmware.boots == 1
    events = runtime.events()
    assert [e.code for e in events if e.kind == PROGRESS_EVENT] == [
        "downloading",
        "downloaded",
        "verified",
        "installing",
        "rebooting",
    ]
    assert [(e.kind, e.code) for e in events][-1] == ("update", "FW-SUCCEEDED")


def test_a_rolled_back_command_is_an_error_with_the_reason(tmp_path: Path) -> None:
    rig, options = handler_rig(tmp_path)
    runtime = FakeRuntime()
    args = rig.args("3.2.1")
    place(rig, args)
    rig.backend.firmware.fail_next_boot()
    result = run_command(processor_for(rig, runtime, options), "fw-2", args)
    assert result.status is CommandStatus.ERROR
    assert result.error.startswith("rolled_back: firmware 3.2.1 failed its boot self-test")
    outcome = runtime.events()[-1]
    assert (outcome.kind, outcome.severity) == ("update", EventSeverity.ERROR)


def test_an_agent_without_a_public_key_refuses_firmware(tmp_path: Path) -> None:
    rig, _ = handler_rig(tmp_path)
    result = run_command(processor_for(rig, FakeRuntime(), None), "fw-3", rig.args("3.2.2"))
    assert result.status is CommandStatus.ERROR and "firmware_public_key" in result.error
    assert Opcode.FIRMWARE_BEGIN not in rig.opcodes
