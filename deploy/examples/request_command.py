#!/usr/bin/env python3
"""Ask TMS for a command on a terminal over MQTT, as a support script, and print the replies.

The protocol is in docs/command-requests.md. This script needs only paho-mqtt (2.x),
not TMS itself, so it can be copied to a support engineer's machine:

    pip install 'paho-mqtt>=2'
    TMS_MQTT_PASSWORD=... python3 request_command.py --host broker.example.net \\
        --port 8883 --tls --ca ca.pem --account support-1 TC200-0001 fetch_logs '{"lines": 50}'

It subscribes to its replies, publishes one request, and waits for the sender's
replies: the first says queued (or refused), the last the command's final state.
Each reply is printed as one JSON line. Exit status: 0 the command succeeded, 1 it
was refused or ended otherwise (failed, rejected, expired, cancelled), 2 no final
reply within --timeout, 3 the broker could not be reached or refused the login.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import ssl
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

# The same rules as shared/topics.py (ACCOUNT_PATTERN, COMMAND_ID_PATTERN); a TMS
# unit test keeps them equal.
ACCOUNT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FINAL_STATES = frozenset({"succeeded", "failed", "rejected", "expired", "cancelled"})
PASSWORD_ENV = "TMS_MQTT_PASSWORD"

EXIT_SUCCEEDED, EXIT_NOT_SUCCEEDED, EXIT_TIMEOUT, EXIT_CONNECTION = 0, 1, 2, 3


def request_topic(account: str, request_id: str) -> str:
    return f"tms/requests/{account}/cmd/{request_id}"


def reply_filter(account: str) -> str:
    return f"tms/requests/{account}/reply/+"


def request_payload(
    serial: str, name: str, args: dict[str, Any], expires_in_s: float | None
) -> bytes:
    body: dict[str, Any] = {"v": 1, "serial": serial, "name": name, "args": args}
    if expires_in_s is not None:
        body["expires_in_s"] = expires_in_s
    return json.dumps(body, separators=(",", ":")).encode()


def exit_status(state: str | None) -> int:
    """The script's exit status for the last reply's state (None: no final reply)."""
    if state is None:
        return EXIT_TIMEOUT
    return EXIT_SUCCEEDED if state == "succeeded" else EXIT_NOT_SUCCEEDED


def is_last_reply(reply: dict[str, Any]) -> bool:
    return reply.get("state") == "refused" or reply.get("state") in FINAL_STATES


@dataclass(frozen=True)
class Request:
    account: str
    request_id: str
    payload: bytes


class RequestClient:
    """One MQTT connection: subscribe to the replies, then publish the request.

    On every (re)connect it subscribes again and publishes the request again: the
    request id makes a repeat harmless, and the sender answers it with the command's
    current state, so a reply missed while disconnected is not lost.
    """

    def __init__(self, request: Request, client: mqtt.Client) -> None:
        self.request = request
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = client
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.events.put(("connection", f"the broker refused the connection: {reason}"))
            return
        client.subscribe(reply_filter(self.request.account), qos=1)

    def _on_subscribe(self, client: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if any(code.is_failure for code in codes):
            self.events.put(("connection", "the broker refused the reply subscription"))
            return
        topic = request_topic(self.request.account, self.request.request_id)
        client.publish(topic, self.request.payload, qos=1, retain=False)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            reply = json.loads(message.payload)
        except ValueError:
            print(f"ignoring a reply that is not JSON on {message.topic}", file=sys.stderr)
            return
        if isinstance(reply, dict) and reply.get("request_id") == self.request.request_id:
            self.events.put(("reply", reply))

    def wait(self, timeout: float) -> int:
        """Print every reply until the last one; return the exit status."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                kind, value = self.events.get(timeout=remaining)
            except queue.Empty:
                break
            if kind == "connection":
                print(value, file=sys.stderr)
                return EXIT_CONNECTION
            print(json.dumps(value), flush=True)
            if is_last_reply(value):
                return exit_status(value["state"])
        print(f"no final reply within {timeout:g} s", file=sys.stderr)
        return EXIT_TIMEOUT


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Ask TMS for a command on a terminal over MQTT and print the replies "
        "(docs/command-requests.md).",
        epilog=f"The password is read from ${PASSWORD_ENV} when --password is not given. "
        "Exit status: 0 succeeded, 1 refused or not succeeded, 2 timeout, 3 connection.",
    )
    parser.add_argument("serial", help="the terminal's serial, e.g. TC200-0001")
    parser.add_argument("name", help="the command: ping, diagnostics, fetch_logs, ...")
    parser.add_argument(
        "args",
        nargs="?",
        default="{}",
        help="its arguments as a JSON object, e.g. '{\"lines\": 50}'",
    )
    parser.add_argument("--host", default="localhost", help="the broker (default: localhost)")
    parser.add_argument("--port", type=int, default=1883, help="its port (default: 1883)")
    parser.add_argument("--account", required=True, help="the support-script MQTT account")
    parser.add_argument("--password", help=f"its secret (default: ${PASSWORD_ENV})")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (port 8883)")
    parser.add_argument("--ca", help="the CA file that signed the broker's certificate")
    parser.add_argument("--expires-in", type=float, help="seconds it may wait for the terminal")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the final reply"
    )
    parser.add_argument("--request-id", help="default: a new random id; reuse one to ask again")
    options = parser.parse_args(argv)
    try:
        options.args = json.loads(options.args)
    except ValueError as exc:
        parser.error(f"args must be a JSON object: {exc}")
    if not isinstance(options.args, dict):
        parser.error("args must be a JSON object, e.g. '{}'")
    if not ACCOUNT_RE.fullmatch(options.account):
        parser.error(f"--account {options.account!r} cannot use the request topics")
    options.request_id = options.request_id or uuid.uuid4().hex
    if not REQUEST_ID_RE.fullmatch(options.request_id):
        parser.error("--request-id: use 1-64 letters, digits, '_' or '-'")
    options.password = options.password or os.environ.get(PASSWORD_ENV)
    if not options.password:
        parser.error(f"give --password or set ${PASSWORD_ENV}")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_arguments(argv)
    request = Request(
        options.account,
        options.request_id,
        request_payload(options.serial, options.name, options.args, options.expires_in),
    )
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set(options.account, options.password)
    if options.tls:
        client.tls_set(ca_certs=options.ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    requester = RequestClient(request, client)
    print(f"request {request.request_id}: {options.name} on {options.serial}", file=sys.stderr)
    try:
        client.connect(options.host, options.port, keepalive=30)
    except OSError as exc:
        print(f"cannot reach {options.host}:{options.port}: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    client.loop_start()
    try:
        return requester.wait(options.timeout)
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
