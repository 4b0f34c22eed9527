"""The state of `tms up`'s parts, as a small JSON file in its data directory.

The supervisor rewrites it (atomically: readers never see half a file) whenever a part
changes state; the console's /healthz shows it under "platform", and an operator can
read it with `cat`. Its path reaches the console in the environment variable below,
set by `tms up` for its child the way systemd sets NOTIFY_SOCKET: it is the
supervisor's contract with the process it runs, not a setting for a person.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

STATUS_FILE_ENV = "TMS_PLATFORM_STATUS_FILE"
STATUS_FILE_NAME = "platform-status.json"

PartState = Literal["waiting", "starting", "running", "restarting", "failed", "stopped"]
# starting: parts are coming up for the first time; ok: every part runs; degraded: one
# is restarting; failed: one could not start and the platform is stopping; stopped.
PlatformState = Literal["starting", "ok", "degraded", "failed", "stopping", "stopped"]


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class LastExit:
    ending: str  # "exit code 1", "killed by SIGKILL", "not ready after 60 s"
    at: str  # UTC, ISO 8601
    error: str | None  # the part's last error line, if it wrote one


@dataclass(frozen=True, slots=True)
class PartStatus:
    state: PartState
    pid: int | None
    restarts: int
    # Since when the current process runs (UTC), and when the next start is due.
    started_at: str | None
    next_start_at: str | None
    last_exit: LastExit | None


def platform_state(parts: dict[str, PartStatus], all_started: bool, failed: bool) -> PlatformState:
    if failed:
        return "failed"
    if not all_started:
        return "starting"
    return "ok" if all(part.state == "running" for part in parts.values()) else "degraded"


def status_document(
    state: PlatformState, parts: dict[str, PartStatus], now: datetime
) -> dict[str, Any]:
    return {
        "state": state,
        "supervisor_pid": os.getpid(),
        "updated_at": utc_text(now),
        "parts": {name: asdict(part) for name, part in parts.items()},
    }


def write_status_file(path: Path, document: dict[str, Any]) -> None:
    """Replace ``path`` at once; no secret is in it, so others may read it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n")
    os.replace(tmp, path)


def read_status_file(path: Path) -> dict[str, Any]:
    """The document, or a short one saying why there is none (for /healthz)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {"state": "unknown", "error": f"{path} does not exist"}
    except (OSError, ValueError) as exc:
        return {"state": "unknown", "error": f"cannot read {path}: {exc}"}
    if not isinstance(document, dict):
        return {"state": "unknown", "error": f"{path} does not hold a JSON object"}
    return document
