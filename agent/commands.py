"""Turning a command delivery into at most one CommandResult: parse, de-duplicate, dispatch.

This is the pure heart of the agent's command path: it takes a topic and raw payload
and returns the reply to publish (or None), so it is tested without a broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.outbox import MemoryRecentCommands, RecentCommands
from shared import topics
from shared.errors import MessageError, TopicError
from shared.messages import Command, CommandResult, CommandStatus, parse_message, utcnow

log = logging.getLogger(__name__)

# A handler returns the result's ``output``; raising CommandFailed reports status "error".
CommandHandler = Callable[[Command], Awaitable[dict[str, Any]]]

RECENT_COMMANDS_MAX = 256


class CommandFailed(Exception):
    """Raised by a handler for a command that ran and failed; the message is reported,
    with ``output`` (what it found before failing, e.g. a firmware update's steps) when
    the handler set one."""

    output: dict[str, Any] = {}


class CommandRejected(Exception):
    """Raised by a handler for arguments it will not run with; reported as "rejected"."""


@dataclass(frozen=True, slots=True)
class CommandReply:
    topic: str
    result: CommandResult


async def ping(command: Command) -> dict[str, Any]:
    return {"pong": True}


DEFAULT_HANDLERS: Mapping[str, CommandHandler] = {"ping": ping}


class CommandProcessor:
    """Answers each command for one terminal once, whatever arrives on its command topics."""

    def __init__(
        self,
        serial: str,
        handlers: Mapping[str, CommandHandler] = DEFAULT_HANDLERS,
        *,
        recent: RecentCommands | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.serial = topics.check_serial(serial)
        self._handlers = dict(handlers)
        # On disk in the real agent, so a restart does not run a redelivered command again.
        self._recent = recent if recent is not None else MemoryRecentCommands(RECENT_COMMANDS_MAX)
        self._clock = clock
        self.duplicates = 0
        self.rejected = 0
        self.ignored = 0

    async def process(self, topic: str, payload: bytes) -> CommandReply | None:
        """The reply to publish for one delivery, or None (unanswerable, or a redelivery
        of a command still running)."""
        command_id = self._command_id_of(topic)
        if command_id is None:
            return None
        if self._recent.seen(command_id):
            self.duplicates += 1
            return self._answer_again(command_id)
        # Remembered before running, so a redelivery during a slow command is not run twice.
        self._recent.remember(command_id)
        try:
            result = await self._run(command_id, payload)
        except asyncio.CancelledError:
            # The agent is stopping mid-command. Without a result kept, the sender's
            # resend after the restart would be ignored as "still running" for good.
            interrupted = CommandResult(
                id=command_id,
                status=CommandStatus.ERROR,
                error="interrupted: the agent stopped while running this command",
            )
            self._recent.keep_result(command_id, interrupted.to_payload())
            raise
        if result.status is CommandStatus.REJECTED:
            self.rejected += 1
        self._recent.keep_result(command_id, result.to_payload())
        return CommandReply(topics.command_result(self.serial, command_id), result)

    def _answer_again(self, command_id: str) -> CommandReply | None:
        """A redelivery: the same result again, not a second run. The sender resends a
        command whose result never reached it; the platform keeps the first that lands."""
        stored = self._recent.result_of(command_id)
        if stored is None:
            # Still running (or its result was not kept): the first run will answer.
            log.info("%s: command %s delivered again while running", self.serial, command_id)
            return None
        log.info(
            "%s: command %s delivered again; sending its result again", self.serial, command_id
        )
        try:
            result = parse_message(CommandResult, stored)
        except MessageError:
            return None
        return CommandReply(topics.command_result(self.serial, command_id), result)

    def _command_id_of(self, topic: str) -> str | None:
        try:
            parsed = topics.parse(topic)
        except TopicError as exc:
            self.ignored += 1
            log.warning("%s: ignoring message on %r: %s", self.serial, topic[:200], exc)
            return None
        if parsed.serial != self.serial or parsed.kind is not topics.TopicKind.COMMAND:
            self.ignored += 1
            log.warning("%s: ignoring message on %r: not a command for me", self.serial, topic)
            return None
        return parsed.command_id

    async def _run(self, command_id: str, payload: bytes) -> CommandResult:
        try:
            command = parse_message(Command, payload)
        except MessageError as exc:
            log.warning("%s: rejecting command %s: %s", self.serial, command_id, exc)
            return _rejected(command_id, str(exc))
        if command.id != command_id:
            return _rejected(
                command_id, f"command id {command.id!r} does not match topic id {command_id!r}"
            )
        if command.expires_at is not None and command.expires_at <= self._clock():
            return _rejected(command_id, f"command expired at {command.expires_at.isoformat()}")
        handler = self._handlers.get(command.name)
        if handler is None:
            known = ", ".join(sorted(self._handlers)) or "none"
            return _rejected(
                command_id, f"unknown command {command.name!r}; this agent supports: {known}"
            )
        try:
            output = await handler(command)
        except CommandRejected as exc:
            return _rejected(command_id, str(exc))
        except CommandFailed as exc:
            output = exc.output if isinstance(exc.output, dict) else {}
            return CommandResult(
                id=command_id, status=CommandStatus.ERROR, output=output, error=str(exc)[:2000]
            )
        except Exception as exc:
            # The per-command guard: a bug in one handler must not take the agent down.
            log.exception("%s: command %s (%s) crashed", self.serial, command_id, command.name)
            return CommandResult(
                id=command_id,
                status=CommandStatus.ERROR,
                error=f"agent error while running {command.name!r}: {exc.__class__.__name__}",
            )
        return CommandResult(id=command_id, status=CommandStatus.OK, output=output)


def _rejected(command_id: str, error: str) -> CommandResult:
    return CommandResult(id=command_id, status=CommandStatus.REJECTED, error=error[:2000])
