"""The store-and-forward queues (SQLite and in-memory): order, thinning, durability, command ids."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.outbox import (
    MemoryRecentCommands,
    MessageQueue,
    Outbox,
    OutgoingMessage,
    thinning_victims,
)
from agent.state_file import StateFile
from shared.messages import DeviceStatus, Telemetry, parse_message

QueueFactory = Callable[[int], MessageQueue]


@pytest.fixture(params=["memory", "sqlite"])
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueFactory]:
    opened: list[StateFile] = []

    def factory(max_messages: int) -> MessageQueue:
        if request.param == "memory":
            return Outbox(max_messages)
        store = StateFile(tmp_path / "queue.sqlite3", max_messages)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def heartbeat(n: int) -> OutgoingMessage:
    return OutgoingMessage("tms/v1/T/telemetry", str(n).encode())


def event(n: int) -> OutgoingMessage:
    return OutgoingMessage("tms/v1/T/event", f"e{n}".encode(), droppable=False)


def drain(queue: MessageQueue) -> list[bytes]:
    sent = []
    while (head := queue.peek()) is not None:
        sent.append(head.message.payload)
        queue.done(head)
    return sent


def test_thinning_takes_every_second_of_the_oldest_half() -> None:
    assert thinning_victims([]) == []
    assert thinning_victims([7]) == [7]
    assert thinning_victims([1, 2]) == [2]
    assert thinning_victims(list(range(1, 11))) == [2, 4]
    assert thinning_victims(list(range(1, 101)))[:3] == [2, 4, 6]
    assert max(thinning_victims(list(range(1, 101)))) == 50


def test_fifo_in_order(make_queue: QueueFactory) -> None:
    queue = make_queue(100)
    for n in range(10):
        queue.put(heartbeat(n) if n % 3 else event(n))
    assert len(queue) == 10
    assert drain(queue) == [b"e0", b"1", b"2", b"e3", b"4", b"5", b"e6", b"7", b"8", b"e9"]
    assert len(queue) == 0


def test_full_queue_thins_old_heartbeats_and_never_events(make_queue: QueueFactory) -> None:
    queue = make_queue(10)
    queue.put(event(0))
    for n in range(1, 40):
        queue.put(heartbeat(n))
    queue.put(event(40))
    sent = drain(queue)
    assert sent[0] == b"e0" and sent[-1] == b"e40"
    assert len(sent) <= 11  # the bound, plus the event that arrived when it was full
    heartbeats = [int(p) for p in sent if not p.startswith(b"e")]
    assert heartbeats == sorted(heartbeats)  # order kept
    assert heartbeats[-1] == 39  # the newest survives
    assert heartbeats[0] == 1  # the start of the outage survives too: thinned, not cut
    assert queue.dropped == 39 - len(heartbeats)


def test_events_and_results_are_kept_beyond_the_bound(make_queue: QueueFactory) -> None:
    queue = make_queue(3)
    for n in range(6):
        queue.put(event(n))
    assert len(queue) == 6 and queue.dropped == 0
    assert drain(queue) == [f"e{n}".encode() for n in range(6)]


def test_done_after_thinning_removes_nothing_else(make_queue: QueueFactory) -> None:
    queue = make_queue(2)
    queue.put(heartbeat(0))
    queue.put(heartbeat(1))
    in_flight = queue.peek()
    assert in_flight is not None
    queue.put(heartbeat(2))  # thins message 1
    queue.put(heartbeat(3))  # thins message 2... or the in-flight one
    queue.done(in_flight)
    assert drain(queue)[-1] == b"3"


def test_sqlite_queue_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "queue.sqlite3"
    store = StateFile(path, 100)
    for n in range(5):
        store.put(heartbeat(n))
    head = store.peek()
    assert head is not None
    store.done(head)
    store.close()
    reopened = StateFile(path, 100)
    assert len(reopened) == 4
    assert drain(reopened) == [b"1", b"2", b"3", b"4"]
    reopened.close()


def _fill_then_die(path: str, count: int) -> None:
    store = StateFile(Path(path), 1000)
    for n in range(count):
        store.put(heartbeat(n))
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no clean exit: like a power cut


def test_sqlite_queue_keeps_every_put_across_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    process = multiprocessing.get_context("fork").Process(
        target=_fill_then_die, args=(str(path), 50)
    )
    process.start()
    process.join(30)
    assert process.exitcode == -signal.SIGKILL
    store = StateFile(path, 1000)
    assert drain(store) == [str(n).encode() for n in range(50)]
    store.close()


def test_sqlite_queue_is_fsynced(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "queue.sqlite3", 10)
    journal, synchronous = (
        store._db.execute("PRAGMA journal_mode").fetchone()[0],
        store._db.execute("PRAGMA synchronous").fetchone()[0],
    )
    assert (journal, synchronous) == ("wal", 2)  # 2 = FULL: fsync at every commit
    store.close()


def test_recent_commands_in_memory_are_bounded() -> None:
    recent = MemoryRecentCommands(2)
    for command_id in ("a", "b", "c"):
        recent.remember(command_id)
    assert not recent.seen("a") and recent.seen("b") and recent.seen("c")


def test_recent_commands_on_disk_survive_reopening_and_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    store = StateFile(path, 10, recent_commands_max=3)
    for command_id in ("a", "b", "c", "d"):
        store.remember(command_id)
    store.remember("d")  # remembering twice is harmless
    store.close()
    reopened = StateFile(path, 10, recent_commands_max=3)
    assert [reopened.seen(c) for c in ("a", "b", "c", "d", "e")] == [False, True, True, True, False]
    reopened.close()


def test_results_on_disk_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    store = StateFile(path, 10)
    store.remember("running")
    store.remember("done")
    store.keep_result("done", b'{"v":1,"id":"done","status":"ok"}')
    store.keep_result("never-seen", b"x")  # only remembered ids keep results
    store.close()
    reopened = StateFile(path, 10)
    assert reopened.result_of("done") == b'{"v":1,"id":"done","status":"ok"}'
    assert reopened.result_of("running") is None and reopened.result_of("never-seen") is None
    reopened.close()


def test_a_schema_1_file_keeps_its_ids_and_gains_results(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "queue.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE seen_command (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " id TEXT NOT NULL UNIQUE); INSERT INTO seen_command (id) VALUES ('old-1');"
        " PRAGMA user_version=1;"
    )
    old.close()
    store = StateFile(path, 10)
    assert store.seen("old-1") and store.result_of("old-1") is None
    store.keep_result("old-1", b"r")
    assert store.result_of("old-1") == b"r"
    store.close()


def test_memory_results_follow_their_ids() -> None:
    recent = MemoryRecentCommands(1)
    recent.remember("a")
    recent.keep_result("a", b"ra")
    assert recent.result_of("a") == b"ra"
    recent.remember("b")  # pushes a out
    assert recent.result_of("a") is None and recent.result_of("b") is None


def test_unwritable_queue_path_is_explained(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    from agent.errors import AgentError

    with pytest.raises(AgentError, match="queue_path"):
        StateFile(blocker / "queue.sqlite3", 10)


# Numbering and resending (ingest.sequence, ingest.gap_repair).


def numbered_heartbeat(n: int) -> OutgoingMessage:
    payload = Telemetry(id=f"m{n}", status=DeviceStatus.OK).to_payload()
    return OutgoingMessage("tms/v1/T/telemetry", payload)


def numbers_of(payloads: list[bytes]) -> list[tuple[str, int]]:
    found = []
    for payload in payloads:
        sequence = parse_message(Telemetry, payload).sequence
        assert sequence is not None
        found.append(sequence)
    return found


def test_each_message_is_numbered_in_order_in_the_queues_stream(make_queue: QueueFactory) -> None:
    queue = make_queue(100)
    for n in range(5):
        queue.put(numbered_heartbeat(n))
    assert numbers_of(drain(queue)) == [(queue.stream, n) for n in range(1, 6)]


def test_a_payload_not_made_by_to_payload_goes_unnumbered(make_queue: QueueFactory) -> None:
    queue = make_queue(100)
    queue.put(heartbeat(1))
    queue.put(numbered_heartbeat(2))
    head = queue.peek()
    assert head is not None and head.message.seq is None
    assert drain(queue)[0] == b"1"


def test_sent_messages_are_queued_again_with_their_numbers(make_queue: QueueFactory) -> None:
    queue = make_queue(100)
    for n in range(10):
        queue.put(numbered_heartbeat(n))
    first = drain(queue)
    outcome = queue.resend(queue.stream, [(3, 5), (9, 9)])
    assert outcome.resent == 4 and outcome.missing == []
    assert drain(queue) == [first[2], first[3], first[4], first[8]]  # the same bytes
    queue.put(numbered_heartbeat(99))
    assert numbers_of(drain(queue)) == [(queue.stream, 11)]  # numbering goes on


def test_a_resend_names_what_is_no_longer_held(tmp_path: Path) -> None:
    for queue in (Outbox(100, keep_sent=3), StateFile(tmp_path / "q.sqlite3", 100, keep_sent=3)):
        for n in range(10):
            queue.put(numbered_heartbeat(n))
        drain(queue)  # numbers 1-10 sent; the last three (8-10) are kept
        outcome = queue.resend(queue.stream, [(1, 9), (20, 10**12)])
        assert outcome.resent == 2
        assert outcome.missing == [(1, 7), (20, 10**12)]
        assert queue.resend("0000000000000000", [(1, 2)]).missing == [(1, 2)]


def test_a_message_still_queued_is_not_queued_twice(make_queue: QueueFactory) -> None:
    queue = make_queue(100)
    for n in range(3):
        queue.put(numbered_heartbeat(n))
    outcome = queue.resend(queue.stream, [(1, 3)])
    assert outcome.resent == 0 and outcome.missing == []
    assert len(queue) == 3


def test_the_stream_and_its_numbers_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    store = StateFile(path, 100)
    stream = store.stream
    for n in range(3):
        store.put(numbered_heartbeat(n))
    drain(store)
    store.close()
    reopened = StateFile(path, 100)
    assert reopened.stream == stream
    reopened.put(numbered_heartbeat(3))
    assert numbers_of(drain(reopened)) == [(stream, 4)]
    assert reopened.resend(stream, [(1, 4)]).resent == 4
    reopened.close()
    fresh = StateFile(tmp_path / "other.sqlite3", 100)
    assert fresh.stream > stream or fresh.stream[:10] == stream[:10]  # sorts by its start
    fresh.close()
