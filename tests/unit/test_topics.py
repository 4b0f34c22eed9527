"""The v1 topic tree: builders, the parser, filter checks (table-driven + properties)."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import topics
from shared.errors import TopicError
from shared.topics import Topic, TopicKind


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
