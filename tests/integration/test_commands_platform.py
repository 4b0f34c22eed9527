"""Remote commands on the whole platform: `tms up` runs the sender, and the example
support script's request over MQTT reaches a simulated terminal and comes back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.platform import SECRET_RE, Platform, clean_env, running_platform, tms
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "request_command.py"
SERIAL = "SIM000001"  # the first simulated terminal (tms.stack.simulated_serial)
CONNECTION_FAILED = 3


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    with running_platform(simulate=2) as running:
        yield running


def _script_account(platform: Platform, name: str) -> str:
    result = tms("account", "add", name, "--role", "support-script", env=platform.env())
    assert result.returncode == 0, result.stderr
    return str(SECRET_RE.findall(result.stdout)[-1])


def _request(
    platform: Platform, account: str, secret: str, *args: str
) -> subprocess.CompletedProcess[str]:
    def attempt() -> subprocess.CompletedProcess[str] | None:
        done = subprocess.run(
            [
                sys.executable,
                str(EXAMPLE),
                "--port",
                str(platform.broker_port),
                "--host",
                "127.0.0.1",
                "--account",
                account,
                "--timeout",
                "60",
                *args,
            ],
            env=clean_env(TMS_MQTT_PASSWORD=secret),
            capture_output=True,
            text=True,
            timeout=120,
        )
        # The broker loads a new account within moments of its commit; until then the
        # connection is refused.
        return None if done.returncode == CONNECTION_FAILED else done

    return wait_until(attempt, "the broker to accept the new account", 60)


def test_the_example_script_runs_diagnostics_through_the_platform(platform: Platform) -> None:
    secret = _script_account(platform, "script-e2e")
    done = _request(platform, "script-e2e", secret, SERIAL, "diagnostics")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded" in done.stdout and "usb_link" in done.stdout


def test_the_example_script_is_refused_what_support_may_not_do(platform: Platform) -> None:
    secret = _script_account(platform, "script-refused")
    done = _request(platform, "script-refused", secret, SERIAL, "reboot")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "may not send reboot" in done.stdout + done.stderr
