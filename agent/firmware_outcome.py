"""What a firmware update's steps mean, without I/O: its states, the checks before an
install, the verdict on what the TC-200 says after the boot, and the events to publish.

agent/firmware_update.py does the I/O around these; tests/unit/test_agent_firmware_update.py
checks them alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from agent.tc200_protocol import DeviceInfo, InfoFlags
from shared.firmware_signature import FirmwareManifest, FirmwareRejected
from shared.messages import Event, EventSeverity, utcnow

# Alert rules match this kind (config/alerts.toml "update-failed"): an error opens the
# alert, the next info of the same kind (a later update that succeeded) resolves it.
OUTCOME_EVENT = "update"
PROGRESS_EVENT = "update.progress"
# Download progress becomes an event at these steps only; the callback gets every percent.
EVENT_PERCENT_STEP = 10


class UpdateState(StrEnum):
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    VERIFIED = "verified"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


FINAL_STATES = frozenset({UpdateState.SUCCEEDED, UpdateState.FAILED, UpdateState.ROLLED_BACK})


@dataclass(frozen=True, slots=True)
class Progress:
    version: str
    state: UpdateState
    percent: float | None = None  # downloading only
    at: datetime = field(default_factory=utcnow)


ProgressSink = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class Verdict:
    """How an update ended: ``failure`` is one word for counting, ``reason`` a sentence.

    ``state`` is final, or ``verified`` for a command that only downloads."""

    state: UpdateState
    version_after: str | None = None
    failure: str | None = None
    reason: str | None = None


# Pure: what the terminal's answers mean.


def refuse_unless_fits(manifest: FirmwareManifest, info: DeviceInfo) -> None:
    if not manifest.fits(info.model):
        raise FirmwareRejected(
            "model",
            f"firmware {manifest.version} is for {', '.join(manifest.models)}, "
            f"not for this terminal's model {info.model}",
        )


def already_installed(manifest: FirmwareManifest, info: DeviceInfo) -> bool:
    """The terminal runs this version already (an update that finished before a restart
    of the agent lost its result, or a rollout's retry): nothing to install."""
    return info.firmware == manifest.version and not info.flags & InfoFlags.ROLLED_BACK


def judge_boot(
    target: str, before: DeviceInfo, after: DeviceInfo | None, fault: str | None, waited_s: float
) -> Verdict:
    """What GET_INFO after FIRMWARE_BOOT says: the new version, the old one rolled back,
    or anything else (no answer, another terminal, another version), which is a failure."""
    rolled_back = after is not None and bool(after.flags & InfoFlags.ROLLED_BACK)
    if after is None:
        return Verdict(
            UpdateState.FAILED,
            failure="no_device",
            reason=f"the TC-200 did not answer within {waited_s:g} s of booting firmware "
            f"{target}: {fault or 'no answer'}; check it on site",
        )
    if after.serial != before.serial:
        return Verdict(
            UpdateState.FAILED,
            after.firmware,
            "other_terminal",
            f"another terminal answered after the boot ({after.serial}, not {before.serial})",
        )
    if after.firmware == target and not rolled_back:
        return Verdict(UpdateState.SUCCEEDED, after.firmware)
    if after.firmware == before.firmware and rolled_back:
        return Verdict(
            UpdateState.ROLLED_BACK,
            after.firmware,
            "rolled_back",
            f"firmware {target} failed its boot self-test; the TC-200 went back to "
            f"{after.firmware}",
        )
    if after.firmware == before.firmware:
        return Verdict(
            UpdateState.FAILED,
            after.firmware,
            "not_booted",
            f"the TC-200 still runs {after.firmware} and reports no rollback: it did not "
            f"boot firmware {target}",
        )
    flag = " with the rolled-back flag" if rolled_back else ""
    return Verdict(
        UpdateState.FAILED,
        after.firmware,
        "other_version",
        f"the TC-200 reports firmware {after.firmware}{flag}, expected {target} "
        f"(or {before.firmware} rolled back)",
    )


def progress_event(progress: Progress) -> Event | None:
    """A progress event for a change of state and every 10 % of the download."""
    if progress.state in FINAL_STATES:
        return None  # outcome_event says how it ended
    percent = progress.percent
    if percent is not None and 0 < percent < 100 and percent % EVENT_PERCENT_STEP:
        return None
    shown = "" if percent is None else f" {percent:g} %"
    return Event(
        ts=progress.at,
        kind=PROGRESS_EVENT,
        code=progress.state.value,
        message=f"firmware {progress.version}: {progress.state.value}{shown}",
    )


def outcome_event(version: str, verdict: Verdict) -> Event | None:
    """The ``update`` event of an ending; none for a download_only command that stopped
    at verified (nothing was installed, nothing to open or resolve)."""
    if verdict.state not in FINAL_STATES:
        return None
    if verdict.state is UpdateState.SUCCEEDED:
        return Event(
            kind=OUTCOME_EVENT,
            severity=EventSeverity.INFO,
            code="FW-SUCCEEDED",
            message=f"the TC-200 runs firmware {version}",
        )
    code = "TC200-ROLLBACK" if verdict.state is UpdateState.ROLLED_BACK else "FW-FAILED"
    return Event(
        kind=OUTCOME_EVENT,
        severity=EventSeverity.ERROR,
        code=code,
        message=f"firmware {version}: {verdict.state.value}: {verdict.reason}"[:2000],
    )
