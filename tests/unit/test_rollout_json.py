"""A rollout's target and policy as stored JSON: round trips through real JSON text,
every strict refusal (a typo or a value of the wrong kind never becomes a default),
and the defaults for keys left out."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from rollouts.decide import RolloutPolicy
from rollouts.errors import PolicyError, RolloutError, TargetError
from rollouts.pace import RateLimit
from rollouts.rollout_json import (
    policy_from_json,
    policy_to_json,
    target_from_json,
    target_to_json,
    window_of,
)
from rollouts.targets import Target
from rollouts.tasks import RetryPolicy


def through_text(data: dict[str, Any]) -> Any:
    """As a JSONB column or a REST body gives it back."""
    return json.loads(json.dumps(data))


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        Target(),
        Target(
            customers=frozenset({3, 1, 2**31 - 1}),
            stores=frozenset({7}),
            models=frozenset({"TC-200", "TC-300"}),
            min_version="2.0",
            max_version="2.5.0-rc1",
            tags=frozenset({"pilot", "north"}),
            exclude_tags=frozenset({"hold"}),
            allow_downgrade=True,
        ),
    ],
)
def test_a_target_survives_json(target: Target) -> None:
    stored = through_text(target_to_json(target))
    assert target_from_json(stored) == target
    assert stored["customers"] == sorted(target.customers)  # stable text for a diff


@pytest.mark.parametrize(
    "policy, window",
    [
        (RolloutPolicy(), None),
        (
            RolloutPolicy(
                success_threshold_pct=87.5,
                error_threshold_pct=12.5,
                max_failures=0,
                max_concurrent=7,
                rate=RateLimit(90),
                retry=RetryPolicy(4, timedelta(seconds=1.5), timedelta(minutes=9)),
                approve_each_wave=True,
                watch_period=timedelta(hours=2),
                health_margin_points=None,
                install_time=timedelta(0),
            ),
            "Mon-Fri 02:00-05:00",
        ),
    ],
)
def test_a_policy_survives_json(policy: RolloutPolicy, window: str | None) -> None:
    stored = through_text(policy_to_json(policy, window))
    assert policy_from_json(stored) == policy
    assert window_of(stored) == window
    assert set(stored) == set(policy_to_json(RolloutPolicy()))  # every key written


def test_missing_keys_take_the_defaults() -> None:
    assert policy_from_json({}) == RolloutPolicy()
    assert target_from_json({}) == Target()
    assert window_of({}) is None


def test_null_means_none_where_none_is_a_choice() -> None:
    policy = policy_from_json(
        {"max_failures": None, "rate_per_minute": None, "health_margin_points": None}
    )
    assert policy.max_failures is None and policy.rate is None
    assert policy.health_margin_points is None  # null turns health gating off
    target = target_from_json({"min_version": None, "max_version": "", "customers": None})
    assert target == Target()


def test_a_window_is_checked_and_written_in_its_normal_form() -> None:
    assert window_of({"window": " mon-fri  2:00 - 5:00 "}) == "Mon-Fri 02:00-05:00"
    assert window_of({"window": "   "}) is None
    assert window_of({"window": None}) is None
    # policy_from_json checks it too, though the driver reads it per store.
    assert policy_from_json({"window": "22:00-04:00"}) == RolloutPolicy()


# -- refusals ------------------------------------------------------------------------


def refused(error: type[Exception], call: Any, data: Any, *words: str) -> str:
    with pytest.raises(error) as caught:
        call(data)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize(
    "data, words",
    [
        ({"error_treshold_pct": 20}, ["unknown policy field", "'error_treshold_pct'"]),
        ({"b": 1, "a": 2}, ["'a', 'b'"]),
        ({"max_concurrent": True}, ["max_concurrent", "a number"]),
        ({"success_threshold_pct": False}, ["success_threshold_pct", "a number"]),
        ({"rate_per_minute": True}, ["rate_per_minute", "a number"]),
        ({"max_failures": False}, ["max_failures", "a number"]),
        ({"health_margin_points": True}, ["health_margin_points", "a number"]),
        ({"error_threshold_pct": float("nan")}, ["error_threshold_pct", "a number"]),
        ({"watch_period_s": float("nan")}, ["watch_period_s"]),
        ({"retry_delay_s": float("inf")}, ["retry_delay_s", "out of range"]),
        ({"max_concurrent": "10"}, ["max_concurrent", "a number"]),
        ({"max_concurrent": [10]}, ["max_concurrent", "a number"]),
        ({"retry_delay_s": -1}, ["retry_delay_s", "not negative"]),
        ({"max_retry_delay_s": -0.5}, ["max_retry_delay_s", "not negative"]),
        ({"watch_period_s": -60}, ["watch_period_s", "not negative"]),
        ({"install_time_s": -1}, ["install_time_s", "not negative"]),
        ({"max_concurrent": 2.5}, ["max_concurrent", "whole"]),
        ({"max_failures": 0.5}, ["max_failures", "whole"]),
        ({"rate_per_minute": 1.5}, ["rate_per_minute", "whole"]),
        ({"max_concurrent": 0}, ["at least 1"]),
        ({"max_concurrent": -3}, ["at least 1"]),
        ({"rate_per_minute": 0}, ["at least 1"]),
        ({"max_failures": -1}, ["negative"]),
        ({"max_attempts": 0}, ["at least 1"]),
        ({"success_threshold_pct": 100.5}, ["between 0 and 100"]),
        ({"error_threshold_pct": -1}, ["between 0 and 100"]),
        ({"health_margin_points": 101}, ["between 0 and 100"]),
        ({"retry_delay_s": 600, "max_retry_delay_s": 60}, ["first delay"]),
        ({"max_concurrent": 2e9}, ["max_concurrent", "out of range"]),
        ({"watch_period_s": 1e12}, ["watch_period_s", "out of range"]),
        ({"approve_each_wave": 1}, ["approve_each_wave", "true or false"]),
        ({"approve_each_wave": "yes"}, ["approve_each_wave", "true or false"]),
        ({"approve_each_wave": None}, ["approve_each_wave", "true or false"]),
        ({"window": "02:00"}, ["window", "not a window"]),
        ({"window": "Mon-Fry 02:00-05:00"}, ["window", "not a day"]),
        ({"window": "25:00-26:00"}, ["window", "not a time of day"]),
        ({"window": "02:00-02:00"}, ["window", "empty"]),
        ({"window": 200}, ["window"]),
        ({"window": ["02:00-05:00"]}, ["window"]),
    ],
)
def test_a_policy_refuses(data: dict[str, Any], words: list[str]) -> None:
    refused(PolicyError, policy_from_json, data, *words)


@pytest.mark.parametrize("data", [[], "policy", None, 5])
def test_a_policy_is_an_object(data: Any) -> None:
    refused(PolicyError, policy_from_json, data, "JSON object")


@pytest.mark.parametrize(
    "data, words",
    [
        ({"customer": [1]}, ["unknown target field", "'customer'"]),
        ({"customers": 5}, ["customers", "a list of ids"]),
        ({"customers": "1,2"}, ["customers", "a list of ids"]),
        ({"customers": {"1": 1}}, ["customers", "a list of ids"]),
        ({"stores": [0]}, ["stores", "a list of ids"]),
        ({"stores": [-4]}, ["stores", "a list of ids"]),
        ({"customers": [True]}, ["customers", "a list of ids"]),
        ({"customers": [1, False]}, ["customers", "a list of ids"]),
        ({"customers": [1.0]}, ["customers", "a list of ids"]),
        ({"customers": ["1"]}, ["customers", "a list of ids"]),
        ({"customers": [2**31]}, ["customers", "a list of ids"]),
        ({"customers": [10**400]}, ["customers", "a list of ids"]),
        ({"customers": [None]}, ["customers", "a list of ids"]),
        ({"models": "TC-200"}, ["models", "a list of names"]),
        ({"models": [""]}, ["models"]),
        ({"tags": ["x" * 65]}, ["tags"]),
        ({"tags": ["a\nb"]}, ["tags"]),
        ({"exclude_tags": [3]}, ["exclude_tags"]),
        ({"min_version": 2}, ["min_version"]),
        ({"max_version": "9" * 65}, ["max_version"]),
        ({"allow_downgrade": "true"}, ["allow_downgrade", "true or false"]),
        ({"allow_downgrade": 1}, ["allow_downgrade", "true or false"]),
        ({"min_version": "2.5", "max_version": "2.5"}, ["empty"]),
        ({"tags": ["x"], "exclude_tags": ["x"]}, ["both required and excluded"]),
    ],
)
def test_a_target_refuses(data: dict[str, Any], words: list[str]) -> None:
    refused(TargetError, target_from_json, data, *words)


def test_a_target_with_a_version_that_does_not_parse_is_a_rollout_error() -> None:
    refused(RolloutError, target_from_json, {"min_version": "two"}, "not a version")


@pytest.mark.parametrize("data", [[], "target", None])
def test_a_target_is_an_object(data: Any) -> None:
    refused(TargetError, target_from_json, data, "JSON object")


# -- bugs found (tests that fail until rollouts/rollout_json.py is fixed) -------------


@pytest.mark.parametrize(
    "data",
    [{"max_attempts": 10**400}, {"max_concurrent": -(10**400)}, {"retry_delay_s": 10**309}],
)
def test_bug_a_huge_whole_number_is_a_policy_error_not_an_overflow(data: dict[str, Any]) -> None:
    # json.loads gives an int of any size; "{value:g}" in the refusal converts it to a
    # float and raises OverflowError (a 500 from the REST API) instead of PolicyError.
    refused(PolicyError, policy_from_json, data, "out of range")


def test_bug_max_attempts_must_be_whole() -> None:
    # 2.5 attempts is silently cut to 2, where max_concurrent 2.5 is refused.
    refused(PolicyError, policy_from_json, {"max_attempts": 2.5}, "max_attempts", "whole")


@pytest.mark.parametrize("value", [False, 0, "", {}])
@pytest.mark.parametrize("key", ["customers", "tags"])
def test_bug_a_falsy_non_list_is_not_an_empty_list(key: str, value: Any) -> None:
    # ``data.get(key) or []`` lets false, 0, "" and {} through as "any": a client that
    # sent "customers": false (or a form that sent "") targets the whole fleet.
    refused(TargetError, target_from_json, {key: value}, key)
