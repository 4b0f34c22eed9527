"""`tms up --simulate` makes the firmware signing key on its first start (owner-only, in the
data directory, not in the database) and gives the simulated fleet its public half."""

from __future__ import annotations

import json
import stat
import urllib.request
from pathlib import Path

import pytest

from tests.integration.platform import clean_env, running_platform, tms
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _platform_state(url: str) -> str:
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:  # noqa: S310
        return str(json.loads(response.read())["platform"]["state"])


def test_the_first_start_makes_the_signing_key_and_the_fleet_gets_its_public_half() -> None:
    with running_platform(simulate=1) as platform:
        data_dir = platform.data_dir
        signing_key = data_dir / "firmware-signing.key"
        assert stat.S_IMODE(signing_key.stat().st_mode) == 0o600
        fleet = json.loads((data_dir / "simulator" / "credentials.json").read_text())
        public_key = Path(fleet["firmware"]["public_key"])
        assert public_key == data_dir / "simulator" / "firmware-public.pem"
        assert fleet["firmware"]["directory"] == str(data_dir / "simulator" / "firmware")
        printed = tms(
            "firmware",
            "public-key",
            env=clean_env(TMS_DATABASE_URL=platform.database_url, TMS_DATA_DIR=str(data_dir)),
        )
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == public_key.read_text()
        # The simulator read the file and runs, with every other part.
        wait_until(lambda: _platform_state(platform.console_url) == "ok", "the platform ok", 120)
        assert b"PRIVATE" not in public_key.read_bytes()
