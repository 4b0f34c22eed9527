"""The new-rollout and resume forms: their fields, their values as sent, and what is
wrong with each (pure: no Flask, no database). The rules themselves are the rollouts
package's (``rollout_json``, ``waves``); this module asks them one field at a time, so
that each refusal is shown beside the field it is about, not as one line at the top.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from console.errors import ConsoleError
from rollouts.decide import RolloutPolicy
from rollouts.errors import (
    RolloutConflict,
    RolloutError,
    RolloutNotFound,
    WaveSpecError,
    WindowError,
)
from rollouts.rollout_json import policy_from_json, policy_to_json, target_from_json
from rollouts.targets import Target
from rollouts.waves import parse_wave_spec

DEFAULT_WAVES = "1%,10%,50%,100%"
NAME_MAX = 200  # rollout.name
TEXT_MAX = 200  # any other one-line field: more is not a value, it is a mistake
GENERAL = "form"  # the key of an error that belongs to no single field


@dataclass(frozen=True)
class PolicyField:
    """One policy setting as the form shows it: ``key`` in the policy's JSON, ``name``
    in the form, and how a typed value becomes the JSON one."""

    key: str
    name: str
    label: str
    unit: str = ""
    hint: str = ""
    blank: str | None = None  # what an empty field means; None: a value is needed
    scale: float = 1  # JSON units per form unit (60: minutes typed, seconds kept)
    whole: bool = False
    flag: bool = False  # a checkbox
    text: bool = False  # free text (the window)


POLICY_FIELDS: tuple[PolicyField, ...] = (
    PolicyField("success_threshold_pct", "success_threshold_pct", "Success threshold", "%",
                "of a wave must succeed before the next wave opens"),
    PolicyField("error_threshold_pct", "error_threshold_pct", "Error threshold", "%",
                "of a wave failing or rolled back halts the rollout"),
    PolicyField("max_failures", "max_failures", "Most failures", "terminals",
                "in the whole rollout; one more halts it", blank="no limit", whole=True),
    PolicyField("max_concurrent", "max_concurrent", "At once per wave", "terminals",
                "downloading or installing at the same time", whole=True),
    PolicyField("rate_per_minute", "rate_per_minute", "Start rate", "per minute",
                "terminals started, fleet-wide", blank="no limit", whole=True),
    PolicyField("max_attempts", "max_attempts", "Attempts", "per terminal",
                "a failed download or transfer is tried again", whole=True),
    PolicyField("retry_delay_s", "retry_delay_min", "First retry after", "min", scale=60),
    PolicyField("max_retry_delay_s", "max_retry_delay_min", "Longest retry delay", "min",
                "the delay doubles up to this", scale=60),
    PolicyField("watch_period_s", "watch_period_min", "Watch period", "min",
                "after a wave meets its threshold, before the next opens", scale=60),
    PolicyField("health_margin_points", "health_margin_points", "Health margin", "points",
                "updated terminals' error or offline rate worse than the rest's by more "
                "halts the rollout", blank="no health gating"),
    PolicyField("install_time_s", "install_time_min", "Install time", "min",
                "an install begins only with this much of the window left", scale=60),
    PolicyField("window", "window", "Install window", "",
                "for stores without their own, in each store's time zone, e.g. Mon-Fri "
                "02:00-05:00", blank="any time", text=True),
    PolicyField("approve_each_wave", "approve_each_wave", "Approve each wave", "",
                "a wave opens only when an admin approves it", flag=True),
)  # fmt: skip
BY_NAME = {f.name: f for f in POLICY_FIELDS}
BY_KEY = {f.key: f for f in POLICY_FIELDS}
# What resuming a halted rollout may change: the thresholds whose crossing halts it.
THRESHOLD_NAMES = ("error_threshold_pct", "max_failures", "success_threshold_pct")
# Checked together: either alone is judged against the other's default.
_RETRY_PAIR = ("retry_delay_s", "max_retry_delay_s")
_TARGET_LISTS = ("customers", "stores", "models", "tags", "exclude_tags")


class FormRefused(ConsoleError, ValueError):
    """A form with bad fields: ``errors`` maps each field's name to its sentence."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = dict(errors)


def sentence(text: str) -> str:
    """A message as a sentence for a page: capital first letter, final stop."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")


def _number_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return f"{value:g}"
    return str(value)


def form_value(spec: PolicyField, policy: Mapping[str, Any]) -> str:
    """The text a field shows for a policy's value (its JSON units turned into the form's)."""
    value = policy.get(spec.key)
    if spec.flag:
        return "yes" if value is True else ""
    if spec.text:
        return value if isinstance(value, str) else ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number_text(value / spec.scale)
    return ""


DEFAULT_POLICY: dict[str, Any] = policy_to_json(RolloutPolicy())
DEFAULT_POLICY_VALUES = {spec.name: form_value(spec, DEFAULT_POLICY) for spec in POLICY_FIELDS}


def _parse_value(spec: PolicyField, raw: str) -> tuple[Any, str | None]:
    """The JSON value of one typed field and its error (None when fine)."""
    if spec.flag:
        return raw == "yes", None
    if spec.text:
        if len(raw) > TEXT_MAX:
            return None, f"at most {TEXT_MAX} characters"
        return (raw or None), None
    if not raw:
        if spec.blank is None:
            return None, "enter a number"
        return None, None
    try:
        number = float(raw)
    except ValueError:
        return None, f"{raw[:20]!r} is not a number"
    if not math.isfinite(number):
        return None, "enter a finite number"
    if spec.whole and number != int(number):
        return None, "enter a whole number"
    if number < 0:
        return None, "enter a number that is not negative"
    value = number * spec.scale
    return (int(value) if spec.whole else value), None


def parse_policy(
    form: Mapping[str, str], names: Iterable[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The policy JSON of the ``names`` fields as typed, and the error of each bad one.

    Each value is checked by ``policy_from_json`` on its own (the retry delays as a
    pair), so a refusal names its field."""
    specs = [BY_NAME[name] for name in names]
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in specs:
        value, error = _parse_value(spec, form.get(spec.name, "").strip())
        if error is not None:
            errors[spec.name] = sentence(f"{spec.label}: {error}")
        else:
            values[spec.key] = value
    for spec in specs:
        if spec.name in errors or spec.key in _RETRY_PAIR:
            continue
        try:
            policy_from_json({spec.key: values[spec.key]})
        except RolloutError as exc:
            errors[spec.name] = sentence(_without_key(str(exc), spec.key))
    pair = {key: values[key] for key in _RETRY_PAIR if key in values}
    if len(pair) == len(_RETRY_PAIR):
        try:
            policy_from_json(pair)
        except RolloutError as exc:
            errors[BY_KEY[_RETRY_PAIR[1]].name] = sentence(str(exc))
    if not errors:
        try:
            policy_from_json(values)
        except RolloutError as exc:
            errors[GENERAL] = sentence(str(exc))
    return values, errors


def _without_key(message: str, key: str) -> str:
    """'window: ...' without the JSON key a form user never sees."""
    prefix = f"{key}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def threshold_warning(policy: Mapping[str, Any]) -> str | None:
    """When the error threshold can never be what halts a wave: the success threshold,
    out of reach first, halts it earlier (rollouts.decide)."""
    success = policy.get("success_threshold_pct")
    error = policy.get("error_threshold_pct")
    if not isinstance(success, int | float) or not isinstance(error, int | float):
        return None
    if error <= 100 - success:
        return None
    return (
        f"With a success threshold of {success:g}%, a wave halts as soon as more than "
        f"{100 - success:g}% of it fails: the error threshold of {error:g}% never decides."
    )


@dataclass(frozen=True)
class RolloutForm:
    """The new-rollout form as sent, kept as text to be shown again."""

    name: str = ""
    version: str = ""
    customers: tuple[str, ...] = ()
    stores: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    min_version: str = ""
    max_version: str = ""
    allow_downgrade: bool = False
    waves: str = DEFAULT_WAVES
    policy: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_POLICY_VALUES))

    @classmethod
    def parse(cls, form: MultiDict[str, str]) -> RolloutForm:
        def listed(name: str) -> tuple[str, ...]:
            values = (value.strip()[:TEXT_MAX] for value in form.getlist(name))
            return tuple(dict.fromkeys(value for value in values if value))

        def one(name: str) -> str:
            return form.get(name, "").strip()[: TEXT_MAX + 1]

        return cls(
            name=form.get("name", "").strip()[: NAME_MAX + 1],
            version=one("version"),
            customers=listed("customers"),
            stores=listed("stores"),
            models=listed("models"),
            tags=listed("tags"),
            exclude_tags=listed("exclude_tags"),
            min_version=one("min_version"),
            max_version=one("max_version"),
            allow_downgrade=form.get("allow_downgrade") == "yes",
            waves=one("waves"),
            policy={spec.name: one(spec.name) for spec in POLICY_FIELDS},
        )

    def fields(self) -> list[tuple[str, str]]:
        """Every value as (name, value) pairs: the hidden fields that carry a previewed
        rollout, unchanged, to the button that starts it."""
        pairs = [("name", self.name), ("version", self.version)]
        for name in _TARGET_LISTS:
            pairs.extend((name, value) for value in getattr(self, name))
        pairs += [("min_version", self.min_version), ("max_version", self.max_version)]
        if self.allow_downgrade:
            pairs.append(("allow_downgrade", "yes"))
        pairs.append(("waves", self.waves))
        pairs.extend((name, value) for name, value in self.policy.items() if value)
        return pairs


@dataclass(frozen=True)
class NewRollout:
    """A checked new-rollout form: what ``rollouts.manage.plan`` and ``create`` take."""

    name: str
    version: str
    target: Target
    policy: dict[str, Any]
    wave_spec: str


def check(form: RolloutForm) -> NewRollout:
    """The rollout the form asks for, or FormRefused with every bad field's reason."""
    errors: dict[str, str] = {}
    if not form.name:
        errors["name"] = "Give the rollout a name, e.g. “2.5.0 to Acme”."
    elif len(form.name) > NAME_MAX or not form.name.isprintable():
        errors["name"] = f"A name is 1 to {NAME_MAX} printable characters."
    if not form.version:
        errors["version"] = "Choose the released firmware version to roll out."
    target, target_errors = _target(form)
    errors.update(target_errors)
    try:
        parse_wave_spec(form.waves)
    except WaveSpecError as exc:
        errors["waves"] = sentence(str(exc))
    policy, policy_errors = parse_policy(form.policy, [spec.name for spec in POLICY_FIELDS])
    errors.update(policy_errors)
    if errors or target is None:
        raise FormRefused(errors or {GENERAL: "Check the target."})
    return NewRollout(form.name, form.version, target, policy, form.waves)


def _target(form: RolloutForm) -> tuple[Target | None, dict[str, str]]:
    errors: dict[str, str] = {}
    ids: dict[str, list[int]] = {}
    for name, what in (("customers", "customer"), ("stores", "store")):
        chosen: tuple[str, ...] = getattr(form, name)
        if not all(value.isdigit() and 0 < int(value) < 2**31 for value in chosen):
            errors[name] = f"Choose each {what} from the list."
        else:
            ids[name] = [int(value) for value in chosen]
    for name in ("min_version", "max_version"):
        try:
            target_from_json({name: getattr(form, name)})
        except RolloutError as exc:
            errors[name] = sentence(_without_key(str(exc), name))
    data: dict[str, Any] = {
        "customers": ids.get("customers", []),
        "stores": ids.get("stores", []),
        "models": list(form.models),
        "tags": list(form.tags),
        "exclude_tags": list(form.exclude_tags),
        "min_version": form.min_version or None,
        "max_version": form.max_version or None,
        "allow_downgrade": form.allow_downgrade,
    }
    if errors:
        return None, errors
    try:
        return target_from_json(data), {}
    except RolloutError as exc:
        return None, {field_of(exc): sentence(str(exc))}


def field_of(exc: RolloutError) -> str:
    """The form field a refusal of ``rollouts.manage`` (or of a rule it asked) belongs
    beside; GENERAL when it is about the whole rollout."""
    message = str(exc)
    if isinstance(exc, WaveSpecError):
        return "waves"
    if isinstance(exc, WindowError) or message.startswith("window:"):
        return "window"
    if message.startswith("a rollout needs a name"):
        return "name"
    if message.startswith(("no firmware", "firmware ")):
        return "version"
    if message.startswith(("the version range", "version below")):
        return "max_version"
    if message.startswith("lowest version"):
        return "min_version"
    if message.startswith("tag ") and "required and excluded" in message:
        return "exclude_tags"
    for key in (*_TARGET_LISTS, "min_version", "max_version"):
        if message.startswith(f"{key}:"):
            return key
    for spec in POLICY_FIELDS:
        if message.startswith(f"{spec.key}:"):
            return spec.name
    return GENERAL


def refusal_status(exc: RolloutError) -> int:
    """The HTTP answer to a refusal: 404 no such rollout, 409 its state does not allow
    it, 400 anything else (a bad target, policy, wave spec or window)."""
    if isinstance(exc, RolloutNotFound):
        return 404
    if isinstance(exc, RolloutConflict):
        return 409
    return 400


def resume_changes(
    form: Mapping[str, str], policy: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The thresholds a resume form changes (only those that differ from ``policy``),
    and the error of each bad one."""
    values, errors = parse_policy(form, THRESHOLD_NAMES)
    if errors:
        return {}, errors
    changed = {key: value for key, value in values.items() if policy.get(key) != value}
    return changed, {}
