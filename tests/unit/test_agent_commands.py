"""The agent's command path without a broker: answers, rejections, duplicates."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.commands import CommandFailed, CommandProcessor
from agent.outbox import MemoryRecentCommands
from shared import topics
from shared.messages import Command, CommandStatus

SERIAL = "TC200-000001"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def command_payload(command_id: str, name: str = "ping", **extra: Any) -> bytes:
    return Command(id=command_id, name=name, **extra).to_payload()


def test_ping_is_answered_ok_with_pong() -> None:
    processor = CommandProcessor(SERIAL)
    reply = run(processor.process(topics.command(SERIAL, "c1"), command_payload("c1")))
    assert reply is not None
    assert reply.topic == topics.command_result(SERIAL, "c1")
    assert reply.result.id == "c1"
    assert reply.result.status is CommandStatus.OK
    assert reply.result.output == {"pong": True}


def counting_ping() -> tuple[list[str], dict[str, Any]]:
    runs: list[str] = []

    async def ping(command: Command) -> dict[str, Any]:
        runs.append(command.id)
        return {"pong": True}

    return runs, {"ping": ping}


def test_duplicate_delivery_runs_once_and_is_answered_again() -> None:
    runs, handlers = counting_ping()
    processor = CommandProcessor(SERIAL, handlers)
    topic, payload = topics.command(SERIAL, "c1"), command_payload("c1")
    first = run(processor.process(topic, payload))
    # The sender's resend after a lost result: the same answer, not a second run.
    again = run(processor.process(topic, payload))
    assert first is not None and again is not None
    assert again.result == first.result and again.topic == first.topic
    assert runs == ["c1"] and processor.duplicates == 1


def test_a_redelivery_while_the_command_runs_is_not_answered() -> None:
    recent = MemoryRecentCommands(8)
    recent.remember("busy")  # the first delivery is still running
    processor = CommandProcessor(SERIAL, recent=recent)
    assert run(processor.process(topics.command(SERIAL, "busy"), command_payload("busy"))) is None


def test_a_command_cancelled_by_a_stopping_agent_answers_its_resend_as_interrupted() -> None:
    async def hang(command: Command) -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    processor = CommandProcessor(SERIAL, {"hang": hang})
    topic, payload = topics.command(SERIAL, "c1"), command_payload("c1", "hang")

    async def stop_mid_command() -> None:
        task = asyncio.create_task(processor.process(topic, payload))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(stop_mid_command())
    # Not "still running" for ever: the resend after the restart learns what happened.
    again = run(processor.process(topic, payload))
    assert again is not None and again.result.status is CommandStatus.ERROR
    assert "interrupted" in (again.result.error or "")


def test_unknown_command_is_rejected_naming_what_is_supported() -> None:
    processor = CommandProcessor(SERIAL)
    reply = run(
        processor.process(topics.command(SERIAL, "c2"), command_payload("c2", "format-disk"))
    )
    assert reply is not None
    assert reply.result.status is CommandStatus.REJECTED
    assert "unknown command 'format-disk'" in (reply.result.error or "")
    assert "ping" in (reply.result.error or "")


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"v": 1}',
        b'{"v": 2, "id": "c3", "name": "ping"}',
        json.dumps({"v": 1, "id": "c3", "name": ""}).encode(),
        b"\xff\xfe",
        b"",
    ],
)
def test_malformed_payload_is_rejected_not_raised(payload: bytes) -> None:
    processor = CommandProcessor(SERIAL)
    reply = run(processor.process(topics.command(SERIAL, "c3"), payload))
    assert reply is not None
    assert reply.result.id == "c3"
    assert reply.result.status is CommandStatus.REJECTED
    assert reply.result.error


def test_command_id_must_match_topic() -> None:
    processor = CommandProcessor(SERIAL)
    reply = run(processor.process(topics.command(SERIAL, "c4"), command_payload("other")))
    assert reply is not None
    assert reply.result.status is CommandStatus.REJECTED
    assert "does not match" in (reply.result.error or "")


def test_expired_command_is_rejected() -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    processor = CommandProcessor(SERIAL)
    reply = run(
        processor.process(topics.command(SERIAL, "c5"), command_payload("c5", expires_at=past))
    )
    assert reply is not None
    assert reply.result.status is CommandStatus.REJECTED
    assert "expired" in (reply.result.error or "")


@pytest.mark.parametrize(
    "topic",
    ["tms/v1/OTHER-1/cmd/c6", "tms/v1/TC200-000001/telemetry", "garbage/topic"],
)
def test_messages_not_addressed_to_my_commands_are_ignored(topic: str) -> None:
    processor = CommandProcessor(SERIAL)
    assert run(processor.process(topic, command_payload("c6"))) is None
    assert processor.ignored == 1


def test_handler_failures_report_error_and_keep_going() -> None:
    async def fails(command: Command) -> dict[str, Any]:
        raise CommandFailed("printer jammed")

    async def crashes(command: Command) -> dict[str, Any]:
        raise RuntimeError("bug")

    processor = CommandProcessor(SERIAL, {"print": fails, "crash": crashes})
    failed = run(processor.process(topics.command(SERIAL, "a"), command_payload("a", "print")))
    crashed = run(processor.process(topics.command(SERIAL, "b"), command_payload("b", "crash")))
    assert failed is not None and crashed is not None
    assert failed.result.status is CommandStatus.ERROR
    assert failed.result.error == "printer jammed"
    assert crashed.result.status is CommandStatus.ERROR
    assert "RuntimeError" in (crashed.result.error or "")


def test_recent_ids_are_bounded() -> None:
    runs, handlers = counting_ping()
    processor = CommandProcessor(SERIAL, handlers, recent=MemoryRecentCommands(2))
    for command_id in ("x1", "x2", "x3"):
        run(processor.process(topics.command(SERIAL, command_id), command_payload(command_id)))
    # x1 fell out of memory, so it would run again; x3 is still remembered.
    assert run(processor.process(topics.command(SERIAL, "x3"), command_payload("x3"))) is not None
    assert run(processor.process(topics.command(SERIAL, "x1"), command_payload("x1"))) is not None
    assert runs == ["x1", "x2", "x3", "x1"]
