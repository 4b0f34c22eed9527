"""An alert's scope read for the console: a rollout's halt names the rollout it is about."""

from __future__ import annotations

import pytest

from console.alert_scope import rollout_of


@pytest.mark.parametrize(
    ("scope", "rollout"),
    [
        ("rollout:7", 7),
        ("rollout:2147483647", 2147483647),
        ("rollout:2147483648", None),  # past the ids the console's paths take
        ("rollout:0", None),
        ("rollout:", None),
        ("rollout:-1", None),
        ("rollout:7a", None),
        ("rollout:\u0667", None),  # an Arabic-Indic seven is a digit, not an id
        ("rollout:" + "9" * 40, None),
        ("terminal:7", None),
        ("host:1:PC-1", None),
        ("", None),
        (None, None),
    ],
)
def test_rollout_of(scope: str | None, rollout: int | None) -> None:
    assert rollout_of(scope) == rollout
