"""Wave specs, how many terminals each wave takes, and which terminals go first."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollouts.errors import WaveSpecError
from rollouts.waves import (
    MAX_WAVES,
    PercentWaves,
    SizedWaves,
    assign_waves,
    parse_wave_spec,
    preview,
    spread_order,
)


@dataclass(frozen=True)
class Terminal:
    serial: str
    customer: int
    store: int | None


def fleet(shape: dict[int, dict[int | None, int]]) -> list[Terminal]:
    """Terminals per customer and store: {customer: {store: count}}."""
    return [
        Terminal(f"C{customer}-S{store}-T{n}", customer, store)
        for customer, stores in shape.items()
        for store, count in stores.items()
        for n in range(count)
    ]


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1,10,50,100", "1,10,50,100"),
        (" 1% , 10%,50 %, 100% ", "1,10,50,100"),
        ("100", "100"),
        ("0.5,12.5,100.0", "0.5,12.5,100"),
        ("10,100,*", "10,100,*"),
        ("*", "*"),
        (" 5 , * ", "5,*"),
    ],
)
def test_specs_that_parse(text: str, canonical: str) -> None:
    assert str(parse_wave_spec(text)) == canonical


def test_the_two_forms() -> None:
    assert parse_wave_spec("1,10,100") == PercentWaves((Fraction(1), Fraction(10), Fraction(100)))
    assert parse_wave_spec("10,100,*") == SizedWaves((10, 100))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "enter the waves"),
        ("   ", "enter the waves"),
        ("1,,100", "empty entry"),
        ("1,10,", "empty entry"),
        ("1,10,50", "last wave must be 100.*add 100 after 50.*1,10,50,\\*"),
        ("10,10,100", "wave 2: 10 is not more than wave 1's 10"),
        ("50,10,100", "cumulative"),
        ("0,100", "wave 1: 0 must be more than 0"),
        ("1,101", "wave 2: 101 must be more than 0 and at most 100"),
        ("1,ten,100", "wave 2: 'ten' is not a percentage"),
        ("-5,100", "is not a percentage"),
        ("1.2345,100", "is not a percentage"),
        ("10,*,20", "\\* must come last"),
        ("10,*,*", "only once"),
        ("10%,*", "'10%' is not a number of terminals"),
        ("0,*", "'0' is not a number of terminals"),
        (",".join(["1"] * (MAX_WAVES + 1)), f"at most {MAX_WAVES}"),
    ],
)
def test_specs_refused_with_a_message_for_the_form(text: str, message: str) -> None:
    with pytest.raises(WaveSpecError, match=message):
        parse_wave_spec(text)


def test_a_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_wave_spec("nonsense")


# --- sizes -----------------------------------------------------------------------------

STANDARD = parse_wave_spec("1,10,50,100")


@pytest.mark.parametrize(
    ("count", "sizes"),
    [
        (0, ()),
        (1, (1,)),
        (3, (1, 1, 1)),  # fewer terminals than waves: one each, in order
        (4, (1, 1, 1, 1)),
        (10, (1, 1, 3, 5)),
        (100, (1, 9, 40, 50)),
        (1000, (10, 90, 400, 500)),
        (101, (2, 9, 40, 50)),  # 1% of 101 rounds up to 2
        (10_000, (100, 900, 4000, 5000)),
    ],
)
def test_preview_of_the_standard_spec(count: int, sizes: tuple[int, ...]) -> None:
    assert preview(count, STANDARD) == sizes


def test_later_waves_give_way_so_every_wave_has_a_terminal() -> None:
    # 99% of 10 rounds up to all 10; the last wave keeps one.
    assert preview(10, parse_wave_spec("50,99,100")) == (5, 4, 1)
    assert preview(5, parse_wave_spec("90,95,99,100")) == (2, 1, 1, 1)


@pytest.mark.parametrize(
    ("count", "sizes"),
    [
        (0, ()),
        (5, (5,)),
        (10, (10,)),
        (50, (10, 40)),
        (110, (10, 100)),
        (1000, (10, 100, 890)),
    ],
)
def test_preview_of_group_sizes(count: int, sizes: tuple[int, ...]) -> None:
    assert preview(count, parse_wave_spec("10,100,*")) == sizes


def test_preview_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError):
        preview(-1, STANDARD)


SPECS = st.one_of(
    st.lists(st.integers(1, 99), max_size=6, unique=True).map(
        lambda shares: PercentWaves(tuple(Fraction(s) for s in [*sorted(shares), 100]))
    ),
    st.lists(st.integers(1, 50), max_size=5).map(lambda sizes: SizedWaves(tuple(sizes))),
)


@given(st.integers(0, 5000), SPECS)
def test_sizes_cover_every_terminal_with_no_empty_wave(
    count: int, spec: PercentWaves | SizedWaves
) -> None:
    sizes = preview(count, spec)
    assert sum(sizes) == count
    assert all(size >= 1 for size in sizes)


@given(st.integers(0, 5000), st.lists(st.integers(1, 99), max_size=6, unique=True))
def test_percent_waves_reach_their_share_and_no_more_unless_a_wave_would_be_empty(
    count: int, shares: list[int]
) -> None:
    spec = PercentWaves(tuple(Fraction(s) for s in [*sorted(shares), 100]))
    waves = len(spec.cumulative)
    sizes = preview(count, spec)
    if count < waves:
        assert sizes == (1,) * count
        return
    assert len(sizes) == waves
    reached = 0
    for index, (size, share) in enumerate(zip(sizes, spec.cumulative, strict=True)):
        before, reached = reached, reached + size
        rounded_up = math.ceil(count * share / 100)
        # At least its share, unless the waves after it needed one terminal each ...
        assert reached >= min(rounded_up, count - (waves - 1 - index))
        # ... and no more, unless it needed a terminal of its own.
        assert reached <= max(rounded_up, before + 1)


# --- which terminals -------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.one_of(st.none(), st.integers(1, 6))),
        max_size=120,
    ),
    SPECS,
    st.integers(),
)
@settings(max_examples=60)
def test_every_terminal_is_in_exactly_one_wave_and_the_waves_are_deterministic(
    places: list[tuple[int, int | None]], spec: PercentWaves | SizedWaves, seed: int
) -> None:
    terminals = [Terminal(f"T{n:04d}", c, s) for n, (c, s) in enumerate(places)]
    waves = assign_waves(terminals, spec, seed)
    flat = [serial for wave in waves for serial in wave]
    assert sorted(flat) == sorted(t.serial for t in terminals)
    assert tuple(len(wave) for wave in waves) == preview(len(terminals), spec)
    assert assign_waves(list(reversed(terminals)), spec, seed) == waves


def test_no_terminal_no_wave() -> None:
    assert assign_waves([], STANDARD, seed=1) == []


def test_one_terminal_is_one_wave() -> None:
    assert assign_waves([Terminal("A", 1, 1)], STANDARD, seed=1) == [("A",)]


def test_three_terminals_under_the_standard_spec_are_three_waves_of_one() -> None:
    terminals = fleet({1: {1: 3}})
    waves = assign_waves(terminals, STANDARD, seed=7)
    assert [len(wave) for wave in waves] == [1, 1, 1]


def test_the_seed_changes_the_order() -> None:
    terminals = fleet({1: {1: 20, 2: 20}, 2: {3: 40}})
    orders = {tuple(spread_order(terminals, seed)) for seed in range(5)}
    assert len(orders) > 1


def test_a_duplicate_serial_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        assign_waves([Terminal("A", 1, 1), Terminal("A", 2, 2)], STANDARD, seed=1)


def test_each_wave_takes_about_its_share_of_every_customer() -> None:
    # 900 terminals of a big customer, 100 of a small one.
    terminals = fleet({1: {s: 9 for s in range(100)}, 2: {s: 10 for s in range(100, 110)}})
    waves = assign_waves(terminals, STANDARD, seed=3)
    customer = {t.serial: t.customer for t in terminals}
    reached: Counter[int] = Counter()
    for wave, share in zip(waves, (1, 10, 50, 100), strict=True):
        reached.update(customer[serial] for serial in wave)
        assert abs(reached[1] - 9 * share) <= 1
        assert abs(reached[2] - share) <= 1


def test_a_small_customer_is_not_all_in_the_first_wave() -> None:
    # Round-robin over customers would put all three of customer 2's terminals first.
    terminals = fleet({1: {1: 97}, 2: {2: 3}})
    for seed in range(20):
        first = assign_waves(terminals, parse_wave_spec("10,100"), seed)[0]
        assert sum(serial.startswith("C2-") for serial in first) <= 1


def test_the_first_waves_are_not_all_one_customer() -> None:
    # Ten customers of the same size: a hash order could still give wave 1 to one of
    # them; the spread gives each about the same share.
    terminals = fleet({c: {c * 100 + s: 5 for s in range(4)} for c in range(10)})
    first = assign_waves(terminals, parse_wave_spec("10,100"), seed=11)[0]
    per_customer = Counter(serial.split("-")[0] for serial in first)
    assert len(first) == 20
    assert set(per_customer.values()) == {2}


def test_a_store_keeps_tills_out_of_the_early_waves() -> None:
    # Every store has two tills; at 50% each store has exactly one updated.
    terminals = fleet({1: {s: 2 for s in range(50)}})
    first_half = assign_waves(terminals, parse_wave_spec("50,100"), seed=5)[0]
    stores = Counter(serial.split("-")[1] for serial in first_half)
    assert set(stores.values()) == {1}
    assert len(stores) == 50


def test_terminals_without_a_store_are_spread_too() -> None:
    terminals = fleet({1: {None: 10}, 2: {None: 10}})
    first = assign_waves(terminals, parse_wave_spec("50,100"), seed=2)[0]
    assert Counter(serial.split("-")[0] for serial in first) == {"C1": 5, "C2": 5}
