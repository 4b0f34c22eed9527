"""Firmware version order and rollout targeting: who gets a release, and why not."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollouts.errors import RolloutError, TargetError, VersionError
from rollouts.targets import (
    Exclusion,
    Release,
    Target,
    TerminalFacts,
    exclusion,
    matches,
    select_targets,
)
from rollouts.versions import FirmwareVersion, parse_version, require_version
from shared.models import TerminalStatus


def v(text: str) -> FirmwareVersion:
    version = parse_version(text)
    assert version is not None, text
    return version


# --- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ascending",
    [
        ["2.4.1", "2.10.0-rc1", "2.10.0"],
        ["1.9", "1.10", "1.11", "2"],
        ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2"],
        ["1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"],
        ["3.0.0-rc1", "3.0.0-rc2", "3.0.0-rc10", "3.0.0"],
        ["1.0.0-1", "1.0.0-2", "1.0.0-alpha"],  # numbers before letters
        ["0.9.99", "1.0.0-0", "1.0.0", "1.0.1"],
    ],
)
def test_versions_sort_as_the_module_says(ascending: list[str]) -> None:
    parsed = [v(text) for text in ascending]
    assert sorted(reversed(parsed)) == parsed
    assert all(a < b for a, b in zip(parsed, parsed[1:], strict=False))


@pytest.mark.parametrize(
    ("a", "b"),
    [("2.0", "2.0.0"), ("2", "2.0.0.0"), ("2.4.1+b7", "2.4.1"), ("1.0.0-RC1", "1.0.0-rc1")],
)
def test_equal_versions(a: str, b: str) -> None:
    assert v(a) == v(b)


def test_a_version_prints_as_given() -> None:
    assert str(v(" 2.10.0-rc1 ")) == "2.10.0-rc1"
    assert str(v("2.0")) == "2.0"


@pytest.mark.parametrize(
    "text", ["", "v2.4.1", "2.4_hotfix", "2..4", ".2", "2.", "2.4-", "2.4-rc..1", "x", "2.4 1"]
)
def test_unparseable_versions(text: str) -> None:
    assert parse_version(text) is None
    with pytest.raises(VersionError, match="is not a version"):
        require_version(text, "release version")


def test_a_too_long_version_does_not_parse() -> None:
    assert parse_version("1." * 40 + "1") is None


_NUMBERS = st.lists(st.integers(0, 10_000), min_size=1, max_size=5)


@given(_NUMBERS, _NUMBERS)
def test_numeric_versions_order_like_their_zero_padded_numbers(a: list[int], b: list[int]) -> None:
    width = max(len(a), len(b))
    padded_a, padded_b = a + [0] * (width - len(a)), b + [0] * (width - len(b))
    va, vb = v(".".join(map(str, a))), v(".".join(map(str, b)))
    assert (va < vb) == (padded_a < padded_b)
    assert (va == vb) == (padded_a == padded_b)


@given(_NUMBERS, st.from_regex(r"[0-9A-Za-z]{1,6}(\.[0-9A-Za-z]{1,6}){0,2}", fullmatch=True))
def test_a_pre_release_sorts_just_before_its_release(numbers: list[int], pre: str) -> None:
    release = ".".join(map(str, numbers))
    assert v(f"{release}-{pre}") < v(release)
    bumped = ".".join(map(str, [*numbers[:-1], numbers[-1] + 1]))
    assert v(release) < v(f"{bumped}-{pre}")


# --- targeting ------------------------------------------------------------------------

RELEASE = Release(version="2.5.0", models=frozenset({"TC-200"}))


def facts(**changes: object) -> TerminalFacts:
    base = TerminalFacts(
        serial="TC-0001",
        customer=1,
        store=10,
        model="TC-200",
        firmware_version="2.4.1",
        tags=frozenset({"pilot"}),
        status=TerminalStatus.ONLINE,
        timezone="Europe/Berlin",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_an_empty_target_takes_every_terminal_the_release_upgrades() -> None:
    assert matches(Target(), facts())
    assert exclusion(RELEASE, Target(), facts()) is None


@pytest.mark.parametrize(
    ("target", "terminal", "expected"),
    [
        (Target(customers=frozenset({1, 2})), facts(customer=2), True),
        (Target(customers=frozenset({1, 2})), facts(customer=3), False),
        (Target(stores=frozenset({10})), facts(store=10), True),
        (Target(stores=frozenset({10})), facts(store=None), False),
        (Target(models=frozenset({"TC-200"})), facts(model="TC-300"), False),
        (Target(tags=frozenset({"pilot"})), facts(), True),
        (Target(tags=frozenset({"pilot", "berlin"})), facts(), False),  # every tag
        (Target(exclude_tags=frozenset({"hold"})), facts(tags=frozenset({"hold"})), False),
        (Target(exclude_tags=frozenset({"hold"})), facts(), True),
    ],
)
def test_the_filter(target: Target, terminal: TerminalFacts, expected: bool) -> None:
    assert matches(target, terminal) is expected


@pytest.mark.parametrize(
    ("version", "inside"),
    [
        ("1.9.9", False),
        ("2.0", True),  # the lowest version is included
        ("2.0.0", True),
        ("2.4.99", True),
        ("2.5.0-rc1", True),  # a pre-release comes before its release
        ("2.5", False),  # the upper version is excluded
        ("2.5.0", False),
        ("2.10.0", False),
    ],
)
def test_the_version_range_includes_its_lowest_and_excludes_its_upper_version(
    version: str, inside: bool
) -> None:
    target = Target(min_version="2.0", max_version="2.5")
    assert matches(target, facts(firmware_version=version)) is inside


def test_a_one_sided_range() -> None:
    assert matches(Target(min_version="2.4"), facts(firmware_version="9.0"))
    assert not matches(Target(min_version="2.4"), facts(firmware_version="2.3.9"))
    assert matches(Target(max_version="2.4"), facts(firmware_version="0.1"))
    assert not matches(Target(max_version="2.4"), facts(firmware_version="2.4.0"))


@pytest.mark.parametrize("version", [None, "", "garbled", "v2.4.1"])
def test_a_terminal_whose_version_is_unknown_is_never_targeted(version: str | None) -> None:
    terminal = facts(firmware_version=version)
    assert not matches(Target(min_version="1.0"), terminal)
    assert not matches(Target(), terminal)
    assert exclusion(RELEASE, Target(), terminal) is Exclusion.UNKNOWN_VERSION


def test_a_decommissioned_terminal_is_never_targeted() -> None:
    terminal = facts(status=TerminalStatus.DECOMMISSIONED)
    assert not matches(Target(), terminal)
    assert exclusion(RELEASE, Target(), terminal) is Exclusion.DECOMMISSIONED


@pytest.mark.parametrize(
    "status", [TerminalStatus.ONLINE, TerminalStatus.OFFLINE, TerminalStatus.ERROR]
)
def test_terminals_in_any_other_status_are_targeted(status: TerminalStatus) -> None:
    # An offline one waits in its queue; one in error may be what the release fixes.
    assert exclusion(RELEASE, Target(), facts(status=status)) is None


@pytest.mark.parametrize(
    ("terminal", "target", "why"),
    [
        (facts(firmware_version="2.5.0"), Target(), Exclusion.ALREADY_ON_RELEASE),
        (facts(firmware_version="2.5"), Target(), Exclusion.ALREADY_ON_RELEASE),
        (facts(firmware_version="2.6.0"), Target(), Exclusion.NEWER_THAN_RELEASE),
        (facts(model="TC-300"), Target(), Exclusion.MODEL_NOT_FITTED),
        (facts(customer=9), Target(customers=frozenset({1})), Exclusion.NOT_IN_TARGET),
        (facts(), Target(min_version="2.4.2"), Exclusion.VERSION_OUT_OF_RANGE),
    ],
)
def test_why_a_terminal_is_left_out(
    terminal: TerminalFacts, target: Target, why: Exclusion
) -> None:
    assert exclusion(RELEASE, target, terminal) is why


def test_a_rollout_back_to_an_older_release_needs_downgrades_allowed() -> None:
    older = Release(version="2.4.1", models=frozenset({"TC-200"}))
    on_newer = facts(firmware_version="2.5.0")
    assert exclusion(older, Target(), on_newer) is Exclusion.NEWER_THAN_RELEASE
    assert exclusion(older, Target(allow_downgrade=True), on_newer) is None
    # Even then, one already on the older release is left alone.
    on_it = facts(firmware_version="2.4.1")
    assert exclusion(older, Target(allow_downgrade=True), on_it) is Exclusion.ALREADY_ON_RELEASE


def test_a_pre_release_terminal_gets_its_final_release() -> None:
    assert exclusion(RELEASE, Target(), facts(firmware_version="2.5.0-rc3")) is None


def test_select_targets_sorts_the_serials_and_counts_the_rest_by_reason() -> None:
    fleet = [
        facts(serial="C"),
        facts(serial="A"),
        facts(serial="B", firmware_version="2.5.0"),
        facts(serial="D", status=TerminalStatus.DECOMMISSIONED),
        facts(serial="E", firmware_version=None),
        facts(serial="F", firmware_version="2.5.0"),
    ]
    selection = select_targets(RELEASE, Target(), fleet)
    assert selection.serials == ("A", "C")
    assert selection.excluded == {
        Exclusion.ALREADY_ON_RELEASE: 2,
        Exclusion.DECOMMISSIONED: 1,
        Exclusion.UNKNOWN_VERSION: 1,
    }


def test_select_targets_over_no_terminal() -> None:
    selection = select_targets(RELEASE, Target(), [])
    assert selection.serials == ()
    assert selection.excluded == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_version": "2.5", "max_version": "2.5.0"}, "is empty"),
        ({"min_version": "3", "max_version": "2"}, "is empty"),
        ({"min_version": "v2"}, "lowest version 'v2' is not a version"),
        ({"max_version": "two"}, "version below 'two' is not a version"),
        ({"tags": frozenset({"x"}), "exclude_tags": frozenset({"x"})}, "both required"),
    ],
)
def test_a_target_that_makes_no_sense_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RolloutError, match=message):
        Target(**kwargs)  # type: ignore[arg-type]


def test_a_release_needs_a_version_that_orders_and_its_models() -> None:
    with pytest.raises(VersionError, match="release version"):
        Release(version="2.5_final", models=frozenset({"TC-200"}))
    with pytest.raises(TargetError, match="models"):
        Release(version="2.5.0", models=frozenset())


def test_errors_are_value_errors_for_the_console_forms() -> None:
    with pytest.raises(ValueError):
        Target(min_version="nope")
