"""A rollout's target and policy as the JSON kept in its row and taken by the REST API,
and back: the one place that names the keys, so the console, the API, ``tms rollouts``
and the driver read a stored rollout alike.

Reading is strict: an unknown key or a value of the wrong kind is a ``PolicyError`` /
``TargetError`` that names it, never a silent default (a typo in "error_threshold_pct"
must not leave a rollout with the default threshold).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from rollouts.decide import RolloutPolicy
from rollouts.errors import PolicyError, TargetError
from rollouts.pace import RateLimit
from rollouts.targets import Target
from rollouts.tasks import RetryPolicy
from rollouts.windows import WindowError, parse_window

_TARGET_KEYS = frozenset(
    {"customers", "stores", "models", "min_version", "max_version", "tags", "exclude_tags",
     "allow_downgrade"}
)  # fmt: skip
_POLICY_KEYS = frozenset(
    {"success_threshold_pct", "error_threshold_pct", "max_failures", "max_concurrent",
     "rate_per_minute", "max_attempts", "retry_delay_s", "max_retry_delay_s",
     "approve_each_wave", "watch_period_s", "health_margin_points", "install_time_s",
     "window"}
)  # fmt: skip


def target_to_json(target: Target) -> dict[str, Any]:
    return {
        "customers": sorted(target.customers),
        "stores": sorted(target.stores),
        "models": sorted(target.models),
        "min_version": target.min_version,
        "max_version": target.max_version,
        "tags": sorted(target.tags),
        "exclude_tags": sorted(target.exclude_tags),
        "allow_downgrade": target.allow_downgrade,
    }


def target_from_json(data: Mapping[str, Any]) -> Target:
    if not isinstance(data, Mapping):
        raise TargetError("a target is a JSON object")
    _only(data, _TARGET_KEYS, TargetError, "target")
    return Target(
        customers=frozenset(_ints(data, "customers", TargetError)),
        stores=frozenset(_ints(data, "stores", TargetError)),
        models=frozenset(_strings(data, "models", TargetError)),
        min_version=_optional_str(data, "min_version", TargetError),
        max_version=_optional_str(data, "max_version", TargetError),
        tags=frozenset(_strings(data, "tags", TargetError)),
        exclude_tags=frozenset(_strings(data, "exclude_tags", TargetError)),
        allow_downgrade=_bool(data, "allow_downgrade", False, TargetError),
    )


def policy_to_json(policy: RolloutPolicy, window: str | None = None) -> dict[str, Any]:
    return {
        "success_threshold_pct": policy.success_threshold_pct,
        "error_threshold_pct": policy.error_threshold_pct,
        "max_failures": policy.max_failures,
        "max_concurrent": policy.max_concurrent,
        "rate_per_minute": policy.rate.per_minute if policy.rate else None,
        "max_attempts": policy.retry.max_attempts,
        "retry_delay_s": policy.retry.first_delay.total_seconds(),
        "max_retry_delay_s": policy.retry.max_delay.total_seconds(),
        "approve_each_wave": policy.approve_each_wave,
        "watch_period_s": policy.watch_period.total_seconds(),
        "health_margin_points": policy.health_margin_points,
        "install_time_s": policy.install_time.total_seconds(),
        "window": window,
    }


def policy_from_json(data: Mapping[str, Any]) -> RolloutPolicy:
    """The policy; missing keys take RolloutPolicy's defaults."""
    if not isinstance(data, Mapping):
        raise PolicyError("a policy is a JSON object")
    _only(data, _POLICY_KEYS, PolicyError, "policy")
    default = RolloutPolicy()
    rate = _optional_number(data, "rate_per_minute")
    retry = RetryPolicy(
        max_attempts=_whole(
            _number(data, "max_attempts", default.retry.max_attempts), "max_attempts"
        ),
        first_delay=_seconds(data, "retry_delay_s", default.retry.first_delay),
        max_delay=_seconds(data, "max_retry_delay_s", default.retry.max_delay),
    )
    max_failures = _optional_number(data, "max_failures")
    margin = _optional_number(data, "health_margin_points", default.health_margin_points)
    policy = RolloutPolicy(
        success_threshold_pct=_number(data, "success_threshold_pct", default.success_threshold_pct),
        error_threshold_pct=_number(data, "error_threshold_pct", default.error_threshold_pct),
        max_failures=None if max_failures is None else _whole(max_failures, "max_failures"),
        max_concurrent=_whole(_number(data, "max_concurrent", default.max_concurrent),
                              "max_concurrent"),
        rate=None if rate is None else RateLimit(_whole(rate, "rate_per_minute")),
        retry=retry,
        approve_each_wave=_bool(data, "approve_each_wave", False, PolicyError),
        watch_period=_seconds(data, "watch_period_s", default.watch_period),
        health_margin_points=margin,
        install_time=_seconds(data, "install_time_s", default.install_time),
    )  # fmt: skip
    window_of(data)  # checked here, read by the driver per store
    return policy


def window_of(data: Mapping[str, Any]) -> str | None:
    """The policy's default install window (for stores without their own), checked."""
    text = data.get("window")
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str):
        raise PolicyError("window: a text such as 'Mon-Fri 02:00-05:00'")
    try:
        window = parse_window(text)
    except WindowError as exc:
        raise PolicyError(f"window: {exc}") from None
    return None if window is None else str(window)


# Strict readers: bool is an int in Python, and JSON has no int/float split.


def _only(data: Mapping[str, Any], keys: frozenset[str], error: type[Exception], what: str) -> None:
    unknown = sorted(set(data) - keys)
    if unknown:
        raise error(f"unknown {what} field {', '.join(map(repr, unknown))}")


def _ints(data: Mapping[str, Any], key: str, error: type[Exception]) -> list[int]:
    values = _list(data, key)
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**31 for v in values
    ):
        raise error(f"{key}: a list of ids")
    return values


def _strings(data: Mapping[str, Any], key: str, error: type[Exception]) -> list[str]:
    values = _list(data, key)
    if not isinstance(values, list) or not all(
        isinstance(v, str) and 0 < len(v) <= 64 and v.isprintable() for v in values
    ):
        raise error(f"{key}: a list of names of 1 to 64 printable characters")
    return values


def _list(data: Mapping[str, Any], key: str) -> Any:
    # Only a missing key or null means "any": false, 0, "" or {} are mistakes, and taken
    # as "any" they would target the whole fleet.
    value = data.get(key)
    return [] if value is None else value


def _optional_str(data: Mapping[str, Any], key: str, error: type[Exception]) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise error(f"{key}: a version of up to 64 characters")
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool, error: type[Exception]) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise error(f"{key}: true or false")
    return value


def _number(data: Mapping[str, Any], key: str, default: float) -> float:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise PolicyError(f"{key}: a number")
    if abs(value) > 1e9:  # not formatted: an int of 400 digits does not fit a float
        raise PolicyError(f"{key}: out of range (at most 1e9)")
    return float(value)


def _optional_number(
    data: Mapping[str, Any], key: str, default: float | None = None
) -> float | None:
    if key not in data:
        return default
    if data[key] is None:
        return None
    return _number(data, key, 0)


def _whole(value: float, key: str) -> int:
    if value != int(value):
        raise PolicyError(f"{key}: a whole number")
    return int(value)


def _seconds(data: Mapping[str, Any], key: str, default: timedelta) -> timedelta:
    value = _number(data, key, default.total_seconds())
    if value < 0:
        raise PolicyError(f"{key}: seconds, not negative")
    return timedelta(seconds=value)
