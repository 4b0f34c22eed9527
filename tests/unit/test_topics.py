"""The v1 topic tree: builders, the parser, filter checks (table-driven + properties)."""

import contextlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import topics
from shared.command_states import FINAL
from shared.errors import TopicError
from shared.messages import CommandRequest, parse_message
from shared.topics import RequestKind, RequestTopic, Topic, TopicKind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tms/v1/TC200-0001/telemetry", Topic("TC200-0001", TopicKind.TELEMETRY)),
        ("tms/v1/TC200-0001/status", Topic("TC200-0001", TopicKind.STATUS)),
        ("tms/v1/a.b_c-9/event", Topic("a.b_c-9", TopicKind.EVENT)),
        ("tms/v1/X1/cmd/abc-123", Topic("X1", TopicKind.COMMAND, "abc-123")),
        ("tms/v1/X1/cmd-result/abc_123", Topic("X1", TopicKind.COMMAND_RESULT, "abc_123")),
    ],
)
def test_parse_accepts_every_topic_kind(text: str, expected: Topic) -> None:
    assert topics.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tms/v1",
        "tms/v2/X1/telemetry",
        "tms/v1/X1/unknown",
        "tms/v1/X1/telemetry/extra",
        "tms/v1/+/telemetry",
        "tms/v1/#",
        "tms/v1/X1/cmd",
        "tms/v1/X1/cmd/",
        "tms/v1/X1/cmd/a/b",
        "tms/v1/-X1/telemetry",
        "tms/v1/" + "A" * 65 + "/telemetry",
        "/tms/v1/X1/telemetry",
        "tms/v1/X 1/telemetry",
        "$SYS/broker/uptime",
    ],
)
def test_parse_rejects_what_is_not_in_the_tree(text: str) -> None:
    with pytest.raises(TopicError):
        topics.parse(text)


def test_builders_round_trip_through_the_parser() -> None:
    assert topics.parse(topics.telemetry("S1")).kind is TopicKind.TELEMETRY
    assert topics.parse(topics.status("S1")).kind is TopicKind.STATUS
    assert topics.parse(topics.event("S1")).kind is TopicKind.EVENT
    assert topics.parse(topics.command("S1", "c1")) == Topic("S1", TopicKind.COMMAND, "c1")
    assert topics.parse(topics.command_result("S1", "c1")).command_id == "c1"
    assert topics.command_filter("S1") == "tms/v1/S1/cmd/+"


@pytest.mark.parametrize("serial", ["", "+", "#", "a/b", "a+b", " a", "-a", "é", "A" * 65])
def test_builders_refuse_serials_that_would_escape_the_tree(serial: str) -> None:
    with pytest.raises(TopicError, match="serial"):
        topics.telemetry(serial)


@pytest.mark.parametrize("command_id", ["", "a/b", "+", "#", "a.b", "x" * 65])
def test_builders_refuse_bad_command_ids(command_id: str) -> None:
    with pytest.raises(TopicError, match="command id"):
        topics.command("S1", command_id)


@pytest.mark.parametrize(
    ("topic_filter", "ok"),
    [
        ("tms/v1/+/telemetry", True),
        ("tms/v1/#", True),
        ("#", True),
        ("+", True),
        ("tms/v1/S1/cmd/+", True),
        ("tms/#/x", False),
        ("tms/v1/S1+/x", False),
        ("tms/v1/S#", False),
        ("", False),
        ("a\x00b", False),
    ],
)
def test_check_filter(topic_filter: str, ok: bool) -> None:
    if ok:
        assert topics.check_filter(topic_filter) == topic_filter
    else:
        with pytest.raises(TopicError):
            topics.check_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic", "ok"), [("a/b", True), ("a/+", False), ("#", False), ("", False)]
)
def test_check_publish_topic(topic: str, ok: bool) -> None:
    if ok:
        assert topics.check_publish_topic(topic) == topic
    else:
        with pytest.raises(TopicError):
            topics.check_publish_topic(topic)


_tree_like = st.lists(
    st.sampled_from(
        ["tms", "v1", "v2", "S1", "telemetry", "status", "cmd", "cmd-result", "+", "#", "", "x y"]
    )
    | st.text(max_size=12),
    max_size=7,
).map("/".join)


@given(st.one_of(st.text(), _tree_like))
def test_parser_never_fails_with_anything_but_topic_error(text: str) -> None:
    try:
        parsed = topics.parse(text)
    except TopicError:
        return
    assert str(parsed) == text


@given(st.one_of(st.text(), _tree_like))
def test_filter_and_publish_checks_never_fail_with_anything_else(text: str) -> None:
    for check in (topics.check_filter, topics.check_publish_topic):
        with contextlib.suppress(TopicError):
            check(text)


@given(st.from_regex(topics.SERIAL_PATTERN, fullmatch=True))
def test_every_valid_serial_builds_parseable_topics(serial: str) -> None:
    assert topics.parse(topics.telemetry(serial)).serial == serial


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tms/requests/support-1/cmd/r-1", RequestTopic("support-1", RequestKind.COMMAND, "r-1")),
        ("tms/requests/a.b_c-9/reply/R_2", RequestTopic("a.b_c-9", RequestKind.REPLY, "R_2")),
    ],
)
def test_parse_request_topic_accepts_both_kinds(text: str, expected: RequestTopic) -> None:
    assert topics.parse_request_topic(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tms/requests",
        "tms/requests/support-1",
        "tms/requests/support-1/cmd",
        "tms/requests/support-1/cmd/",
        "tms/requests/support-1/cmd/a/b",
        "tms/requests/support-1/cmd-result/r1",
        "tms/requests/support-1/other/r1",
        "tms/requests/+/cmd/r1",
        "tms/requests/support-1/cmd/+",
        "tms/requests/-s/cmd/r1",
        "tms/requests/s/cmd/-r1",
        "tms/requests/s/cmd/r.1",
        "tms/requests/ops@example/cmd/r1",
        "tms/requests/" + "A" * 65 + "/cmd/r1",
        "tms/requests/s/cmd/" + "r" * 65,
        "tms/requests/s/cmd/r1\n",
        "tms/v1/s/cmd/r1",
        "/tms/requests/s/cmd/r1",
    ],
)
def test_parse_request_topic_rejects_the_rest(text: str) -> None:
    with pytest.raises(TopicError):
        topics.parse_request_topic(text)


def test_request_topics_are_not_terminal_topics() -> None:
    # Outside tms/v1/, so no serial can name a request topic and no request is a v1 topic.
    with pytest.raises(TopicError):
        topics.parse(topics.command_request("s1", "r1"))
    with pytest.raises(TopicError):
        topics.parse_request_topic(topics.command("s1", "r1"))


def test_request_builders_round_trip_through_the_parser() -> None:
    request = topics.parse_request_topic(topics.command_request("support-1", "r1"))
    assert request == RequestTopic("support-1", RequestKind.COMMAND, "r1")
    reply = topics.parse_request_topic(topics.command_request_reply("support-1", "r1"))
    assert reply == RequestTopic("support-1", RequestKind.REPLY, "r1")
    assert topics.command_reply_filter("support-1") == "tms/requests/support-1/reply/+"
    assert topics.COMMAND_REQUEST_FILTER == "tms/requests/+/cmd/+"
    assert topics.check_filter(topics.COMMAND_REQUEST_FILTER)


@pytest.mark.parametrize("account", ["", "+", "#", "a/b", "-a", "é", "a b", "a@b", "A" * 65, "a\n"])
def test_request_builders_refuse_bad_account_names(account: str) -> None:
    for build in (
        lambda: topics.command_request(account, "r1"),
        lambda: topics.command_request_reply(account, "r1"),
        lambda: topics.command_reply_filter(account),
    ):
        with pytest.raises(TopicError, match="account name"):
            build()


@pytest.mark.parametrize("request_id", ["", "a/b", "+", "#", "a.b", "-a", "x" * 65, "a\n"])
def test_request_builders_refuse_bad_request_ids(request_id: str) -> None:
    with pytest.raises(TopicError, match="request id"):
        topics.command_request("s1", request_id)
    with pytest.raises(TopicError, match="request id"):
        topics.command_request_reply("s1", request_id)


@pytest.mark.parametrize("serial", ["TC1\n", "TC1\r"])
def test_a_trailing_newline_is_no_part_of_a_serial(serial: str) -> None:
    assert not topics.is_valid_serial(serial)
    with pytest.raises(TopicError):
        topics.parse(f"tms/v1/{serial}/telemetry")


_request_like = st.lists(
    st.sampled_from(["tms", "requests", "v1", "s1", "cmd", "reply", "r1", "+", "#", "", "a b"])
    | st.text(max_size=12),
    max_size=6,
).map("/".join)


@given(st.one_of(st.text(), _request_like))
def test_request_parser_never_fails_with_anything_but_topic_error(text: str) -> None:
    try:
        parsed = topics.parse_request_topic(text)
    except TopicError:
        return
    assert str(parsed) == text


@given(
    st.from_regex(topics.ACCOUNT_PATTERN, fullmatch=True),
    st.from_regex(topics.COMMAND_ID_PATTERN, fullmatch=True),
)
def test_every_valid_account_and_request_id_build_parseable_topics(
    account: str, request_id: str
) -> None:
    parsed = topics.parse_request_topic(topics.command_request(account, request_id))
    assert (parsed.account, parsed.request_id) == (account, request_id)


def _example() -> ModuleType:
    """deploy/examples/request_command.py, imported as a module (it has no side effects)."""
    path = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "request_command.py"
    spec = importlib.util.spec_from_file_location("request_command_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_example_script_speaks_the_request_protocol() -> None:
    example = _example()
    assert example.request_topic("support-1", "r1") == topics.command_request("support-1", "r1")
    assert example.reply_filter("support-1") == topics.command_reply_filter("support-1")
    assert example.ACCOUNT_RE.pattern == topics.ACCOUNT_PATTERN
    assert example.REQUEST_ID_RE.pattern == topics.COMMAND_ID_PATTERN
    payload = example.request_payload("TC1", "fetch_logs", {"lines": 5}, 60.0)
    request = parse_message(CommandRequest, payload)
    assert (request.serial, request.name, request.args) == ("TC1", "fetch_logs", {"lines": 5})
    assert request.expires_in_s == 60.0
    assert {s.value for s in FINAL} == example.FINAL_STATES


def test_the_example_script_refuses_bad_arguments_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = _example()
    for argv in (
        ["--account", "s1", "--password", "x", "TC1", "ping", "[1]"],
        ["--account", "s1", "--password", "x", "TC1", "ping", "{"],
        ["--account", "a@b", "--password", "x", "TC1", "ping"],
        ["--account", "s1", "--password", "x", "--request-id", "a/b", "TC1", "ping"],
    ):
        with pytest.raises(SystemExit) as caught:
            example.parse_arguments(argv)
        assert caught.value.code == 2, argv
    assert "args must be a JSON object" in capsys.readouterr().err
