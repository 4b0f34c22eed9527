"""Finding gaps in terminals' message numbers, and planning their repair (pure)."""

from __future__ import annotations

import pytest

from ingest.gap_repair import DueGap, answered_missing, plan_gap
from ingest.sequence import Gap, StreamMark, subtract, subtract_ranges, track

S1 = "00000000010aaaaaa"[:16]
S2 = "00000000020bbbbbb"[:16]


def test_a_first_stream_starts_at_one_and_a_jump_is_a_gap() -> None:
    tracked = track(None, [(S1, 1), (S1, 2), (S1, 5)])
    assert tracked.mark == StreamMark(S1, 5)
    assert tracked.gaps == [Gap(S1, 3, 4)]
    assert tracked.missing == 2
    assert tracked.fills == []


def test_a_terminal_first_seen_mid_stream_misses_the_numbers_before() -> None:
    tracked = track(None, [(S1, 4)])
    assert tracked.gaps == [Gap(S1, 1, 3)]


def test_numbers_out_of_order_within_a_batch_are_no_gap() -> None:
    tracked = track(StreamMark(S1, 10), [(S1, 13), (S1, 11), (S1, 12)])
    assert tracked.mark == StreamMark(S1, 13)
    assert tracked.gaps == []


def test_a_number_at_or_below_the_mark_is_a_fill_and_leaves_the_mark() -> None:
    tracked = track(StreamMark(S1, 10), [(S1, 7), (S1, 10), (S1, 11)])
    assert tracked.fills == [(S1, 7), (S1, 10)]
    assert tracked.mark == StreamMark(S1, 11)


def test_repeats_in_one_batch_count_once() -> None:
    tracked = track(StreamMark(S1, 1), [(S1, 3), (S1, 3)])
    assert tracked.gaps == [Gap(S1, 2, 2)]
    assert tracked.mark == StreamMark(S1, 3)


def test_a_newer_stream_starts_over_and_an_older_one_only_fills() -> None:
    newer = track(StreamMark(S1, 500), [(S2, 1), (S2, 2)])
    assert newer.mark == StreamMark(S2, 2)
    assert newer.gaps == []
    older = track(StreamMark(S2, 2), [(S1, 480), (S1, 900)])
    assert older.mark == StreamMark(S2, 2)
    assert older.fills == [(S1, 480), (S1, 900)]
    assert older.gaps == []


def test_either_commit_order_of_two_workers_finds_the_same_missing_numbers() -> None:
    # Worker A has 1-3 and 6, worker B has 4 and 5: whoever commits first, nothing
    # stays missing once both have.
    first = track(None, [(S1, 1), (S1, 2), (S1, 3), (S1, 6)])
    assert first.gaps == [Gap(S1, 4, 5)]
    second = track(first.mark, [(S1, 4), (S1, 5)])
    assert second.fills == [(S1, 4), (S1, 5)] and second.gaps == []
    other = track(None, [(S1, 4), (S1, 5)])
    assert other.gaps == [Gap(S1, 1, 3)]
    then = track(other.mark, [(S1, 1), (S1, 2), (S1, 3), (S1, 6)])
    assert then.fills == [(S1, 1), (S1, 2), (S1, 3)] and then.gaps == []


@pytest.mark.parametrize(
    ("numbers", "left"),
    [
        ([], [(10, 20)]),
        ([10], [(11, 20)]),
        ([20], [(10, 19)]),
        ([15], [(10, 14), (16, 20)]),
        ([9, 21], [(10, 20)]),
        (list(range(10, 21)), []),
        ([11, 12, 18], [(10, 10), (13, 17), (19, 20)]),
    ],
)
def test_subtract_numbers_from_a_range(numbers: list[int], left: list[tuple[int, int]]) -> None:
    assert subtract(10, 20, numbers) == left


def test_subtract_ranges_from_a_range() -> None:
    assert subtract_ranges(1, 100, [(1, 10), (50, 60), (95, 200)]) == [(11, 49), (61, 94)]
    assert subtract_ranges(1, 10, [(0, 100)]) == []
    assert subtract_ranges(1, 10, []) == [(1, 10)]


def _gap(status: str | None, result: object, attempts: int = 1) -> DueGap:
    return DueGap(7, 1, S1, 100, 199, attempts, status, result)


def test_a_gap_never_asked_for_is_asked_for_whole() -> None:
    assert plan_gap(_gap(None, None, attempts=0), max_attempts=3) == ([(100, 199)], [])


def test_what_the_agent_no_longer_holds_is_lost_and_the_rest_asked_again() -> None:
    answer = {"stream": S1, "resent": 50, "missing": [[100, 149]]}
    assert answered_missing(_gap("succeeded", answer)) == [(100, 149)]
    assert plan_gap(_gap("succeeded", answer), max_attempts=3) == ([(150, 199)], [(100, 149)])


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "missing",
        {"stream": S2, "missing": [[100, 199]]},  # another stream's answer
        {"stream": S1, "missing": "all"},
        {"stream": S1, "missing": [[150, 100], ["a", 1], [1, 2, 3], [1.5, 2]]},
    ],
)
def test_an_odd_answer_loses_nothing(answer: object) -> None:
    assert answered_missing(_gap("succeeded", answer)) == []
    assert plan_gap(_gap("succeeded", answer), max_attempts=3) == ([(100, 199)], [])


def test_an_answer_of_a_failed_resend_loses_nothing() -> None:
    answer = {"stream": S1, "missing": [[100, 199]]}
    assert plan_gap(_gap("failed", answer), max_attempts=3) == ([(100, 199)], [])


def test_a_gap_still_open_after_every_attempt_is_lost() -> None:
    assert plan_gap(_gap("expired", None, attempts=3), max_attempts=3) == ([], [(100, 199)])
