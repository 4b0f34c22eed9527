"""Test-wide fixtures: real servers come from the plugins in tests/fixtures."""

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.broker",
    "tests.fixtures.brokers",
    "tests.fixtures.browser",
]

# The properties are about results, not speed: on a busy 2-core CI machine the time a
# single example or the input generation takes says nothing about the code under test.
settings.register_profile("tms", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tms")
