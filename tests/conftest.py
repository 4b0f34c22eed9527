"""Test-wide fixtures: real servers come from the plugins in tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.broker",
    "tests.fixtures.brokers",
    "tests.fixtures.browser",
]
