"""The new-rollout and resume forms without a server: typed values become the policy's
JSON (minutes into seconds, blanks into "no limit"), each refusal lands on its field,
and a previewed form is carried to the start button unchanged."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict

from console.rollout_forms import (
    DEFAULT_POLICY_VALUES,
    GENERAL,
    FormRefused,
    RolloutForm,
    check,
    field_of,
    parse_policy,
    resume_changes,
    threshold_warning,
)
from rollouts.errors import PolicyError, RolloutConflict, TargetError, WaveSpecError
from rollouts.targets import Target


def filled(**changes: str | list[str]) -> MultiDict[str, str]:
    values: dict[str, str | list[str]] = {"name": "Pilot", "version": "2.5.0", "waves": "1,100"}
    values.update(DEFAULT_POLICY_VALUES)
    values.update(changes)
    return MultiDict(
        [(k, v) for k, vs in values.items() for v in ([vs] if isinstance(vs, str) else vs)]
    )


def test_the_defaults_make_a_rollout_to_every_terminal() -> None:
    wanted = check(RolloutForm.parse(filled()))
    assert (wanted.name, wanted.version, wanted.wave_spec) == ("Pilot", "2.5.0", "1,100")
    assert wanted.target == Target()
    assert wanted.policy["retry_delay_s"] == 300 and wanted.policy["install_time_s"] == 900
    assert wanted.policy["max_failures"] is None and wanted.policy["rate_per_minute"] is None
    assert wanted.policy["window"] is None and wanted.policy["approve_each_wave"] is False


def test_typed_values_become_the_policys_json() -> None:
    wanted = check(
        RolloutForm.parse(
            filled(
                watch_period_min="1.5", max_failures="3", rate_per_minute="60",
                health_margin_points="", approve_each_wave="yes", window="Mon-Fri 02:00-05:00",
                customers=["7", "9"], tags="pilot", min_version="2.0",
            )
        )
    )  # fmt: skip
    assert wanted.policy["watch_period_s"] == 90
    assert (wanted.policy["max_failures"], wanted.policy["rate_per_minute"]) == (3, 60)
    assert wanted.policy["health_margin_points"] is None  # empty: no health gating
    assert wanted.policy["approve_each_wave"] is True
    assert wanted.target == Target(
        customers=frozenset({7, 9}), tags=frozenset({"pilot"}), min_version="2.0"
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": ""}, "name"),
        ({"waves": "50,10"}, "waves"),
        ({"stores": "S1"}, "stores"),
        ({"max_version": "x"}, "max_version"),
        ({"min_version": "3", "max_version": "2"}, "max_version"),
        ({"success_threshold_pct": "-1"}, "success_threshold_pct"),
        ({"success_threshold_pct": ""}, "success_threshold_pct"),
        ({"max_concurrent": "0"}, "max_concurrent"),
        ({"rate_per_minute": "0"}, "rate_per_minute"),
        ({"install_time_min": "inf"}, "install_time_min"),
        ({"retry_delay_min": "500"}, "max_retry_delay_min"),
        ({"window": "25:00-26:00"}, "window"),
    ],
)
def test_each_refusal_names_its_field(changes: dict[str, str], field: str) -> None:
    with pytest.raises(FormRefused) as refused:
        check(RolloutForm.parse(filled(**changes)))
    assert list(refused.value.errors) == [field]
    message = refused.value.errors[field]
    assert not message[0].islower() and message.endswith(".")  # a sentence
    assert "_s:" not in message and "window:" not in message  # no JSON keys shown


def test_a_previewed_form_is_carried_unchanged() -> None:
    form = RolloutForm.parse(filled(customers=["7", "9"], allow_downgrade="yes", max_failures="2"))
    assert RolloutForm.parse(MultiDict(form.fields())) == form


@pytest.mark.parametrize(
    ("exc", "field"),
    [
        (WaveSpecError("x"), "waves"),
        (PolicyError("a rollout needs a name of 1 to 200 printable characters"), "name"),
        (TargetError("no firmware '9' in the library"), "version"),
        (TargetError("firmware 2.6.0 is draft: only a released image is rolled out"), "version"),
        (PolicyError("window: '1' is not a window"), "window"),
        (PolicyError("max_retry_delay_s: a number"), "max_retry_delay_min"),
        (TargetError("no terminal to update: 3 not in target"), GENERAL),
        (RolloutConflict("cannot pause rollout 1: it is paused"), GENERAL),
    ],
)
def test_field_of_a_refusal(exc: Exception, field: str) -> None:
    assert field_of(exc) == field  # type: ignore[arg-type]


def test_resume_changes_only_what_differs() -> None:
    policy = {"error_threshold_pct": 5.0, "success_threshold_pct": 95.0, "max_failures": None}
    same = {"error_threshold_pct": "5", "success_threshold_pct": "95", "max_failures": ""}
    assert resume_changes(same, policy) == ({}, {})
    higher = same | {"error_threshold_pct": "12.5", "max_failures": "10"}
    assert resume_changes(higher, policy) == (
        {"error_threshold_pct": 12.5, "max_failures": 10}, {},
    )  # fmt: skip
    changes, errors = resume_changes(same | {"error_threshold_pct": "101"}, policy)
    assert changes == {} and list(errors) == ["error_threshold_pct"]


def test_parse_policy_of_some_fields_only() -> None:
    values, errors = parse_policy({"max_failures": "", "error_threshold_pct": "7"},
                                  ["max_failures", "error_threshold_pct"])  # fmt: skip
    assert (values, errors) == ({"max_failures": None, "error_threshold_pct": 7.0}, {})


def test_the_threshold_warning() -> None:
    assert threshold_warning({"success_threshold_pct": 95, "error_threshold_pct": 5}) is None
    warning = threshold_warning({"success_threshold_pct": 90, "error_threshold_pct": 20})
    assert warning is not None and "more than 10%" in warning and "20%" in warning
