"""Test-wide fixtures and the test layers.

The servers come from the plugins in tests/fixtures, one per thing they start:
postgres (a database per test), broker and brokers (Mosquitto, amqtt), console (the
Flask app, users, a fleet to show) and browser (Chromium). Loading a plugin starts
nothing and needs no browser: a server starts only when a test asks for its fixture.

Layers, by directory: every test under tests/unit is marked ``unit`` here (pure, no
server: ``scripts/test --fast``); tests/integration and tests/browser mark their own
modules ``integration`` and ``browser``.
"""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.broker",
    "tests.fixtures.brokers",
    "tests.fixtures.console",
    "tests.fixtures.firmware",
    "tests.fixtures.browser",
]

UNIT_TESTS = Path(__file__).parent / "unit"

# The properties are about results, not speed: on a busy 2-core CI machine the time a
# single example or the input generation takes says nothing about the code under test.
settings.register_profile("tms", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tms")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(UNIT_TESTS):
            item.add_marker(pytest.mark.unit)
