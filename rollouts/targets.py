"""Which terminals a rollout updates: the target filter, the facts it is matched against,
and why a terminal is left out (which the console's preview counts).

A target narrows; an empty criterion means "any". A terminal is updated when it
matches the target and the release is an upgrade for it:

- decommissioned terminals never match, whatever the target says;
- its model must be one the release fits (the firmware library's list);
- its version must be known and parse (``rollouts.versions``): TMS cannot tell an
  upgrade from a downgrade otherwise, and on a payment terminal it does not guess;
- a terminal already on the release's version is left alone, and one on a newer
  version too unless the target allows downgrades (a rollout back to an older image).

Version range: ``min_version`` is inclusive and ``max_version`` exclusive, so
``min_version="2.0", max_version="2.5"`` is "every 2.x before 2.5" and includes
``2.5.0-rc1`` (a pre-release sorts before its release).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from rollouts.errors import TargetError
from rollouts.versions import FirmwareVersion, parse_version, require_version
from shared.models import TerminalStatus


@dataclass(frozen=True)
class Target:
    """The terminals a rollout is meant for. Empty sets mean any; tags must all be present."""

    customers: frozenset[int] = frozenset()  # customer ids
    stores: frozenset[int] = frozenset()  # store ids
    models: frozenset[str] = frozenset()
    min_version: str | None = None  # inclusive
    max_version: str | None = None  # exclusive
    tags: frozenset[str] = frozenset()  # a terminal must carry every one of them
    exclude_tags: frozenset[str] = frozenset()  # and none of these (e.g. "pilot-hold")
    allow_downgrade: bool = False
    _min: FirmwareVersion | None = field(init=False, repr=False, compare=False)
    _max: FirmwareVersion | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        low = require_version(self.min_version, "lowest version") if self.min_version else None
        high = require_version(self.max_version, "version below") if self.max_version else None
        if low is not None and high is not None and not low < high:
            raise TargetError(
                f"the version range {low}..{high} is empty: the lowest version is "
                "included and the upper one excluded, so the upper one must be higher"
            )
        if self.tags & self.exclude_tags:
            both = ", ".join(sorted(self.tags & self.exclude_tags))
            raise TargetError(f"tag {both} is both required and excluded")
        # Parsed once here: matching runs over every terminal of the fleet.
        object.__setattr__(self, "_min", low)
        object.__setattr__(self, "_max", high)

    @property
    def has_version_range(self) -> bool:
        return self._min is not None or self._max is not None

    def version_in_range(self, version: FirmwareVersion) -> bool:
        return (self._min is None or self._min <= version) and (
            self._max is None or version < self._max
        )


@dataclass(frozen=True)
class Release:
    """The firmware a rollout installs: its version and the terminal models it fits."""

    version: str
    models: frozenset[str]
    parsed: FirmwareVersion = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.models:
            raise TargetError("a release must name the terminal models it fits")
        object.__setattr__(self, "parsed", require_version(self.version, "release version"))


@dataclass(frozen=True)
class TerminalFacts:
    """What targeting and scheduling need to know about one terminal."""

    serial: str
    customer: int
    store: int | None
    model: str
    firmware_version: str | None  # as last reported; None if never
    tags: frozenset[str]
    status: TerminalStatus
    timezone: str  # the store's IANA zone (the customer's when it has no store)


class Exclusion(StrEnum):
    """Why a terminal is not part of a rollout, in the order the checks run."""

    DECOMMISSIONED = "decommissioned"
    NOT_IN_TARGET = "not in target"  # customer, store, model or tags
    MODEL_NOT_FITTED = "model not fitted"  # the release does not fit its model
    UNKNOWN_VERSION = "unknown version"  # never reported, or does not parse
    VERSION_OUT_OF_RANGE = "version out of range"
    ALREADY_ON_RELEASE = "already on release"
    NEWER_THAN_RELEASE = "newer than release"


def matches(target: Target, facts: TerminalFacts) -> bool:
    """Whether the target's filter selects the terminal (the release aside)."""
    return _filter_exclusion(target, facts) is None


def exclusion(release: Release, target: Target, facts: TerminalFacts) -> Exclusion | None:
    """Why the rollout leaves this terminal out, or None when it updates it."""
    reason = _filter_exclusion(target, facts)
    if reason is not None:
        return reason
    if facts.model not in release.models:
        return Exclusion.MODEL_NOT_FITTED
    # Known and parsed: _filter_exclusion returned UNKNOWN_VERSION otherwise.
    current = parse_version(facts.firmware_version or "")
    assert current is not None
    if current == release.parsed:
        return Exclusion.ALREADY_ON_RELEASE
    if current > release.parsed and not target.allow_downgrade:
        return Exclusion.NEWER_THAN_RELEASE
    return None


@dataclass(frozen=True)
class Selection:
    """The terminals a rollout would update (sorted serials) and how many were left out why."""

    serials: tuple[str, ...]
    excluded: Mapping[Exclusion, int]


def select_targets(release: Release, target: Target, fleet: Iterable[TerminalFacts]) -> Selection:
    """Split the fleet into the terminals to update and counts of the rest by reason."""
    chosen: list[str] = []
    excluded: Counter[Exclusion] = Counter()
    for facts in fleet:
        reason = exclusion(release, target, facts)
        if reason is None:
            chosen.append(facts.serial)
        else:
            excluded[reason] += 1
    return Selection(serials=tuple(sorted(chosen)), excluded=dict(excluded))


def _filter_exclusion(target: Target, facts: TerminalFacts) -> Exclusion | None:
    if facts.status == TerminalStatus.DECOMMISSIONED:
        return Exclusion.DECOMMISSIONED
    if not (
        (not target.customers or facts.customer in target.customers)
        and (not target.stores or facts.store in target.stores)
        and (not target.models or facts.model in target.models)
        and target.tags <= facts.tags
        and not target.exclude_tags & facts.tags
    ):
        return Exclusion.NOT_IN_TARGET
    version = parse_version(facts.firmware_version or "")
    if version is None:
        return Exclusion.UNKNOWN_VERSION
    if not target.version_in_range(version):
        return Exclusion.VERSION_OUT_OF_RANGE
    return None
