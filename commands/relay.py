"""Support scripts' command requests over MQTT (docs/command-requests.md).

A script publishes on ``tms/requests/<account>/cmd/<request-id>``; the broker's ACL
lets it publish only under its own account name, so the topic says who asks. The relay
checks the request as the console checks a user's (the support role's commands, the
catalogue's arguments, a rate per account), queues it with the account as who asked,
and replies on ``.../reply/<request-id>``: once accepted or refused, once final. It runs
in a thread of its own so that a slow database never stalls paho's network loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from commands import queue as command_queue
from commands.queue import CommandView, Requester
from commands.rate import TokenBuckets
from shared import topics
from shared.command_catalog import CommandRefused
from shared.errors import MessageError, TopicError
from shared.messages import CommandRequest, CommandRequestReply, parse_message
from shared.models import DeadLetter, Role

log = logging.getLogger(__name__)

# What a support-script account may do: the console's support role.
SCRIPT_ROLE = Role.SUPPORT.value
# Dead-letter reasons of requests that could not be used (ingest's table and page).
REASON_BAD_REQUEST_TOPIC = "bad-request-topic"
REASON_BAD_REQUEST = "bad-request"


class ReplyPublisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Request:
    topic: str
    payload: bytes
    retained: bool


@dataclass(frozen=True, slots=True)
class _Finished:
    command_ids: list[str]


class RequestRelay:
    def __init__(
        self,
        engine: Engine,
        publisher: ReplyPublisher,
        *,
        rate_per_s: float = 5.0,
        burst: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.buckets = TokenBuckets(rate_per_s, burst, clock)
        self._inbox: queue.Queue[_Request | _Finished | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="request-relay", daemon=True)
        self.accepted = 0
        self.refused = 0
        self.ignored = 0

    # -- called from other threads ------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._inbox.put(None)
        self._thread.join(timeout_s)

    def on_message(self, topic: str, payload: bytes, retained: bool = False) -> None:
        self._inbox.put(_Request(topic, payload, retained))

    def on_finished(self, command_ids: list[str]) -> None:
        self._inbox.put(_Finished(list(command_ids)))

    # -- the relay's thread ----------------------------------------------------------

    def _run(self) -> None:
        while (item := self._inbox.get()) is not None:
            try:
                if isinstance(item, _Request):
                    self._handle(item)
                else:
                    self._tell_finished(item.command_ids)
            except SQLAlchemyError as exc:
                # The database is away: the script times out and asks again (its request
                # id makes that safe); a finish is told when the script asks again too.
                log.warning("request relay: database error: %s", str(exc).splitlines()[0])
            except Exception:
                log.exception("request relay: unexpected error")

    def _handle(self, request: _Request) -> None:
        try:
            where = topics.parse_request_topic(request.topic)
        except TopicError as exc:
            # No reply topic can be built for it: kept aside for an operator instead.
            self.ignored += 1
            log.warning("ignoring a request on %r: %s", request.topic[:200], exc)
            self._dead_letter(request, REASON_BAD_REQUEST_TOPIC, str(exc))
            return
        if where.kind is not topics.RequestKind.COMMAND:
            self.ignored += 1
            return
        if request.retained:
            self._reply_refused(where, "a command request must not be retained")
            return
        if not self.buckets.take(where.account):
            self._reply_refused(
                where,
                f"too many requests: at most {self.buckets.rate_per_s:g} per second "
                f"(bursts of {self.buckets.burst}) per account",
            )
            return
        try:
            asked = parse_message(CommandRequest, request.payload)
        except MessageError as exc:
            self._reply_refused(where, str(exc))
            self._dead_letter(request, REASON_BAD_REQUEST, str(exc))
            return
        requester = Requester(where.account, SCRIPT_ROLE, "mqtt", origin="mqtt")
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                view = command_queue.queue_command(
                    session,
                    requester,
                    asked.serial,
                    asked.name,
                    asked.args,
                    asked.expires_in_s,
                    request_id=where.request_id,
                )
            except CommandRefused as exc:
                self._reply_refused(where, str(exc))
                return
        self.accepted += 1
        log.info(
            "%s asked for %s on %s over MQTT: command %s (%s)",
            where.account,
            asked.name,
            asked.serial,
            view.id,
            view.state,
        )
        self._reply(where.account, where.request_id, view)

    def _dead_letter(self, request: _Request, reason: str, detail: str) -> None:
        with Session(self.engine) as session:
            session.add(
                DeadLetter(
                    topic=request.topic[:1024],
                    payload=request.payload,
                    reason=reason,
                    detail=detail[:2000],
                )
            )
            session.commit()

    def _tell_finished(self, command_ids: list[str]) -> None:
        with Session(self.engine) as session:
            for command_id in command_ids:
                view = command_queue.get_command(session, command_id)
                if view is None or view.requester_kind != "mqtt" or view.request_id is None:
                    continue
                self._reply(view.requested_by, view.request_id, view)

    def _reply(self, account: str, request_id: str, view: CommandView) -> None:
        reply = CommandRequestReply(
            request_id=request_id,
            state=view.state,
            command_id=view.id,
            error=view.error,
            output=view.result or {},
        )
        self.publisher.publish(
            topics.command_request_reply(account, request_id), reply.to_payload()
        )

    def _reply_refused(self, where: topics.RequestTopic, reason: str) -> None:
        self.refused += 1
        log.info("refused %s's request %s: %s", where.account, where.request_id, reason)
        reply = CommandRequestReply(
            request_id=where.request_id, state="refused", error=reason[:2000]
        )
        self.publisher.publish(
            topics.command_request_reply(where.account, where.request_id), reply.to_payload()
        )
