"""Waves: the spec a person types, how many terminals each wave takes, and which ones.

Two forms of spec, told apart by the ``*``:

- cumulative percentages, ``1,10,50,100`` (``%`` signs allowed, up to three decimals):
  strictly increasing, ending at 100. Wave *i* brings the share of updated terminals
  up to its percentage, rounded up, so ``1`` of 50 terminals is one terminal, not none;
- group sizes, ``10,100,*``: wave *i* takes that many terminals, and ``*`` (required,
  last) takes the rest, so that no targeted terminal is ever left without a wave.

Every wave gets at least one terminal when there are at least as many terminals as
waves (later waves give way to keep earlier ones non-empty); with fewer, each terminal
is a wave of its own, in order, so 3 terminals under ``1,10,50,100`` are waves of 1, 1
and 1. Empty waves are dropped rather than kept: a wave that can never succeed or fail
would only stall the rollout's gates.

Which terminals go first (``assign_waves``) is spread, not random: every customer and,
within a customer, every store is interleaved through the order in proportion to its
size (stride scheduling, with each group's phase drawn from a hash of the seed). So
each wave holds about its percentage of every customer's and every store's terminals:
the canary waves see many customers' setups, yet no customer, and no store with
several tills, has all of its terminals in an early wave. Plain round-robin over
customers would put the whole fleet of a small customer in the first wave; a plain
hash order would let one big customer fill the first waves. The order is a pure
function of the terminals and the seed, so a rollout's waves can be computed again.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from rollouts.errors import WaveSpecError

MAX_WAVES = 20  # each wave waits for its thresholds (and maybe an approval): more is a typo
_PERCENT = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,3})?)\s*%?")
_SIZE = re.compile(r"[0-9]{1,7}")
_EXAMPLE = "e.g. 1,10,50,100 (percent of the terminals, cumulative) or 10,100,* (group sizes)"


@dataclass(frozen=True)
class PercentWaves:
    """Cumulative percentages, strictly increasing, the last 100."""

    cumulative: tuple[Fraction, ...]

    def sizes(self, count: int) -> tuple[int, ...]:
        """How many terminals each wave takes out of ``count`` (empty waves dropped)."""
        waves = len(self.cumulative)
        if count < waves:
            return (1,) * count
        reached = 0
        ends: list[int] = []
        for i, share in enumerate(self.cumulative):
            end = max(math.ceil(count * share / 100), reached + 1)
            # Leave at least one terminal for each wave still to come.
            end = min(end, count - (waves - 1 - i))
            ends.append(end)
            reached = end
        return tuple(b - a for a, b in zip([0, *ends], ends, strict=False))

    def __str__(self) -> str:
        return ",".join(_number(share) for share in self.cumulative)


@dataclass(frozen=True)
class SizedWaves:
    """Explicit group sizes; a last wave takes the rest."""

    sizes_before_rest: tuple[int, ...]

    def sizes(self, count: int) -> tuple[int, ...]:
        """How many terminals each wave takes out of ``count`` (empty waves dropped)."""
        out: list[int] = []
        left = count
        for size in self.sizes_before_rest:
            take = min(size, left)
            if take:
                out.append(take)
            left -= take
        if left:
            out.append(left)
        return tuple(out)

    def __str__(self) -> str:
        return ",".join([*(str(size) for size in self.sizes_before_rest), "*"])


WaveSpec = PercentWaves | SizedWaves


def parse_wave_spec(text: str) -> WaveSpec:
    """The spec in ``text``; a ``WaveSpecError`` saying what to change otherwise."""
    parts = [part.strip() for part in text.split(",")]
    if parts == [""]:
        raise WaveSpecError(f"enter the waves, {_EXAMPLE}")
    if "" in parts:
        raise WaveSpecError(f"an empty entry between commas: {_EXAMPLE}")
    if len(parts) > MAX_WAVES:
        raise WaveSpecError(f"{len(parts)} waves: at most {MAX_WAVES}")
    if any("*" in part for part in parts):
        return _parse_sizes(parts)
    return _parse_percentages(parts)


def _parse_percentages(parts: list[str]) -> PercentWaves:
    shares: list[Fraction] = []
    for number, part in enumerate(parts, start=1):
        match = _PERCENT.fullmatch(part)
        if match is None:
            raise WaveSpecError(f"wave {number}: {part!r} is not a percentage; {_EXAMPLE}")
        share = Fraction(match[1])
        if not 0 < share <= 100:
            raise WaveSpecError(f"wave {number}: {part} must be more than 0 and at most 100")
        if shares and share <= shares[-1]:
            raise WaveSpecError(
                f"wave {number}: {part} is not more than wave {number - 1}'s "
                f"{_number(shares[-1])}: the percentages are cumulative "
                "(the share of all targeted terminals updated by the end of that wave)"
            )
        shares.append(share)
    if shares[-1] != 100:
        raise WaveSpecError(
            "the last wave must be 100 so that every targeted terminal is updated; "
            f"add 100 after {_number(shares[-1])} (or, for group sizes, end with *: "
            f"{','.join(parts)},*)"
        )
    return PercentWaves(tuple(shares))


def _parse_sizes(parts: list[str]) -> SizedWaves:
    *sizes, last = parts
    if last != "*":
        raise WaveSpecError(
            "with group sizes, * must come last, once: it is the wave that takes the rest"
        )
    parsed: list[int] = []
    for number, part in enumerate(sizes, start=1):
        if part == "*":
            raise WaveSpecError("* may appear only once, as the last wave")
        if not _SIZE.fullmatch(part) or int(part) == 0:
            raise WaveSpecError(
                f"wave {number}: {part!r} is not a number of terminals (1 or more); {_EXAMPLE}"
            )
        parsed.append(int(part))
    return SizedWaves(tuple(parsed))


def preview(count: int, spec: WaveSpec) -> tuple[int, ...]:
    """How many terminals each wave hits when ``count`` terminals are targeted."""
    if count < 0:
        raise ValueError("count must not be negative")
    return spec.sizes(count)


class Placed(Protocol):
    """Where a terminal is, as far as spreading the waves goes (``TerminalFacts`` is one)."""

    @property
    def serial(self) -> str: ...
    @property
    def customer(self) -> int: ...
    @property
    def store(self) -> int | None: ...


def assign_waves(
    terminals: Sequence[Placed], spec: WaveSpec, seed: int | str
) -> list[tuple[str, ...]]:
    """The serials of each wave: every terminal exactly once, spread as the docstring says."""
    serials = [t.serial for t in terminals]
    if len(set(serials)) != len(serials):
        raise ValueError("a terminal is listed twice")
    order = spread_order(terminals, seed)
    waves: list[tuple[str, ...]] = []
    start = 0
    for size in spec.sizes(len(order)):
        waves.append(tuple(order[start : start + size]))
        start += size
    return waves


def spread_order(terminals: Sequence[Placed], seed: int | str) -> list[str]:
    """All serials, customers and their stores interleaved in proportion to their sizes."""
    by_customer: dict[int, list[Placed]] = defaultdict(list)
    for terminal in terminals:
        by_customer[terminal.customer].append(terminal)
    # Ties (and the order inside a store) go by a hash of the serial, not the serial:
    # serials are often numbered by store, and their order would be a pattern.
    tie = {t.serial: _hash(seed, "serial", t.serial) for t in terminals}
    keyed: list[tuple[float, int, str]] = []
    for customer, members in by_customer.items():
        by_store: dict[int | None, list[str]] = defaultdict(list)
        for terminal in members:
            by_store[terminal.store].append(terminal.serial)
        groups = {(customer, store): serials for store, serials in by_store.items()}
        inner = _interleave(groups, seed, tie)
        phase = _unit(seed, "customer", customer)
        keyed.extend(
            ((index + phase) / len(inner), tie[serial], serial)
            for index, serial in enumerate(inner)
        )
    keyed.sort()
    return [serial for _, _, serial in keyed]


def _interleave(
    groups: dict[tuple[int, int | None], list[str]], seed: int | str, tie: dict[str, int]
) -> list[str]:
    """The serials of ``groups`` (stores) merged so that each group is evenly spread."""
    keyed: list[tuple[float, int, str]] = []
    for group, serials in groups.items():
        phase = _unit(seed, "store", group)
        ordered = sorted(serials, key=lambda serial: (tie[serial], serial))
        keyed.extend(
            ((index + phase) / len(ordered), tie[serial], serial)
            for index, serial in enumerate(ordered)
        )
    keyed.sort()
    return [serial for _, _, serial in keyed]


def _hash(seed: int | str, *parts: object) -> int:
    # sha256, not hash(): Python's str hash changes with every process.
    text = "\x1f".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _unit(seed: int | str, *parts: object) -> float:
    """A number in [0, 1) fixed by the seed and the parts: a group's phase in the order."""
    return _hash(seed, *parts) / 2**64


def _number(share: Fraction) -> str:
    return f"{float(share):g}"
