"""The broker's access rules, row by row: every allowed and every refused case."""

import pytest

from broker.acl import (
    GRANTS,
    OWN,
    Access,
    AclAccount,
    is_allowed,
    may_retain,
    mosquitto_acl_text,
)
from shared import topics
from shared.models import AccountKind
from shared.topics import COMMAND_REQUEST_FILTER, INGEST_FILTERS

TERM, ING, CON, SUP, BRG = (
    AccountKind.TERMINAL,
    AccountKind.INGEST,
    AccountKind.CONSOLE,
    AccountKind.SUPPORT_SCRIPT,
    AccountKind.BRIDGE,
)
PUB, SUB = Access.PUBLISH, Access.SUBSCRIBE

ALLOWED = [
    # A regional broker's bridge relays every terminal's messages up and commands down.
    (BRG, "bridge-eu", PUB, "tms/v1/TC1/telemetry"),
    (BRG, "bridge-eu", PUB, "tms/v1/TC2/status"),
    (BRG, "bridge-eu", PUB, "tms/v1/TC1/event"),
    (BRG, "bridge-eu", PUB, "tms/v1/TC1/cmd-result/c-1"),
    (BRG, "bridge-eu", SUB, "tms/v1/+/cmd/+"),
    # A terminal publishes its own reports and results, and reads its own commands.
    (TERM, "TC1", PUB, "tms/v1/TC1/telemetry"),
    (TERM, "TC1", PUB, "tms/v1/TC1/status"),
    (TERM, "TC1", PUB, "tms/v1/TC1/event"),
    (TERM, "TC1", PUB, "tms/v1/TC1/cmd-result/c-1"),
    (TERM, "TC1", SUB, "tms/v1/TC1/cmd/+"),
    (TERM, "TC1", SUB, "tms/v1/TC1/cmd/c-1"),
    (TERM, "TC1", SUB, "$share/g/tms/v1/TC1/cmd/+"),
    (TERM, "a.b-c_1", PUB, "tms/v1/a.b-c_1/telemetry"),
    # Ingest reads everything terminals publish, also as a shared subscription.
    *((ING, "tms-ingest", SUB, f) for f in INGEST_FILTERS),
    *((ING, "tms-ingest", SUB, f"$share/ingest/{f}") for f in INGEST_FILTERS),
    (ING, "tms-ingest", SUB, "tms/v1/TC1/telemetry"),
    (ING, "tms-ingest", SUB, "tms/v1/TC1/cmd-result/+"),
    # The console sends commands to any terminal and reads every result.
    (CON, "tms-console", PUB, "tms/v1/TC1/cmd/c-1"),
    (CON, "tms-console", PUB, "tms/v1/TC2/cmd/c-2"),
    (CON, "tms-console", SUB, "tms/v1/+/cmd-result/+"),
    (CON, "tms-console", SUB, "tms/v1/TC1/cmd-result/c-1"),
    # ... and, as the command sender, reads every script's requests and replies to them.
    (CON, "tms-console", SUB, "tms/requests/+/cmd/+"),
    (CON, "tms-console", SUB, "tms/requests/support/cmd/r-1"),
    (CON, "tms-console", PUB, "tms/requests/support/reply/r-1"),
    (CON, "tms-console", PUB, "tms/requests/other-script/reply/r-2"),
    # A support script reads what terminals publish.
    (SUP, "support", SUB, "tms/v1/+/telemetry"),
    (SUP, "support", SUB, "tms/v1/+/status"),
    (SUP, "support", SUB, "tms/v1/+/event"),
    (SUP, "support", SUB, "tms/v1/+/cmd-result/+"),
    (SUP, "support", SUB, "tms/v1/TC1/telemetry"),
    # ... asks the sender for commands under its own name, and reads its own replies.
    (SUP, "support", PUB, "tms/requests/support/cmd/r-1"),
    (SUP, "support", SUB, "tms/requests/support/reply/+"),
    (SUP, "support", SUB, "tms/requests/support/reply/r-1"),
    (SUP, "a.b-c_1", PUB, "tms/requests/a.b-c_1/cmd/r-1"),
]

REFUSED = [
    # A bridge neither issues commands, nor reads what it relays up, nor the requests.
    (BRG, "bridge-eu", PUB, "tms/v1/TC1/cmd/c-1"),
    (BRG, "bridge-eu", SUB, "tms/v1/+/telemetry"),
    (BRG, "bridge-eu", SUB, "#"),
    (BRG, "bridge-eu", PUB, "tms/requests/bridge-eu/cmd/r-1"),
    (BRG, "bridge-eu", SUB, "tms/requests/+/cmd/+"),
    (BRG, "bridge-eu", PUB, "$SYS/broker/connection/eu/state"),
    # A terminal never publishes commands, nor anything of another terminal's.
    (TERM, "TC1", PUB, "tms/v1/TC1/cmd/c-1"),
    (TERM, "TC1", PUB, "tms/v1/TC2/telemetry"),
    (TERM, "TC1", PUB, "tms/v1/TC2/cmd-result/c-1"),
    (TERM, "TC1", PUB, "tms/v1/TC1/telemetry/extra"),
    (TERM, "TC1", PUB, "tms/v1/TC1/cmd-result"),
    (TERM, "TC1", PUB, "tms/v1/TC1/+"),
    (TERM, "TC1", PUB, "tms/v1/TC1/#"),
    (TERM, "TC1", PUB, "tms/v1/TC1"),
    (TERM, "TC1", PUB, "other/topic"),
    (TERM, "TC1", PUB, "$SYS/broker/uptime"),
    (TERM, "TC1", PUB, ""),
    # ... and subscribes to nothing but its own commands.
    (TERM, "TC1", SUB, "#"),
    (TERM, "TC1", SUB, "+/#"),
    (TERM, "TC1", SUB, "tms/v1/#"),
    (TERM, "TC1", SUB, "tms/v1/TC1/#"),
    (TERM, "TC1", SUB, "tms/v1/TC1/+"),
    (TERM, "TC1", SUB, "tms/v1/TC1/cmd/#"),
    (TERM, "TC1", SUB, "tms/v1/+/cmd/+"),
    (TERM, "TC1", SUB, "tms/v1/TC2/cmd/+"),
    (TERM, "TC1", SUB, "tms/v1/TC2/cmd/c-1"),
    (TERM, "TC1", SUB, "tms/v1/TC1/telemetry"),
    (TERM, "TC1", SUB, "tms/v1/TC1/cmd-result/+"),
    (TERM, "TC1", SUB, "$SYS/#"),
    (TERM, "TC1", SUB, "$share/g/tms/v1/TC2/cmd/+"),
    (TERM, "TC1", SUB, "$share/g/#"),
    (TERM, "TC1", SUB, "tms/v1/TC1/cmd/c#"),  # not a valid filter
    (TERM, "TC1", SUB, ""),
    # A username that is not a serial is never substituted into topics.
    (TERM, "TC1/+", PUB, "tms/v1/TC1/+/telemetry"),
    (TERM, "+", SUB, "tms/v1/+/cmd/+"),
    (TERM, "#", SUB, "tms/v1/#/cmd/+"),
    (TERM, "", PUB, "tms/v1//telemetry"),
    # Ingest publishes nothing and reads no commands, no $SYS, nothing wider.
    (ING, "tms-ingest", PUB, "tms/v1/TC1/telemetry"),
    (ING, "tms-ingest", PUB, "tms/v1/TC1/cmd/c-1"),
    (ING, "tms-ingest", SUB, "#"),
    (ING, "tms-ingest", SUB, "tms/v1/#"),
    (ING, "tms-ingest", SUB, "tms/v1/+/+"),
    (ING, "tms-ingest", SUB, "tms/v1/+/cmd/+"),
    (ING, "tms-ingest", SUB, "tms/v1/+/cmd-result/#"),
    (ING, "tms-ingest", SUB, "$SYS/#"),
    (ING, "tms-ingest", SUB, "$share//tms/v1/+/telemetry"),
    (ING, "tms-ingest", SUB, "$share/g"),
    (ING, "tms-ingest", SUB, "$share/+/tms/v1/+/telemetry"),
    (ING, "tms-ingest", SUB, "$share/g/#"),
    (ING, "tms-ingest", SUB, "tms/v1/tms-ingest/telemetry"),  # its own name's tree
    # The console publishes only commands, to concrete topics, and reads only results.
    (CON, "tms-console", PUB, "tms/v1/TC1/telemetry"),
    (CON, "tms-console", PUB, "tms/v1/TC1/cmd-result/c-1"),
    (CON, "tms-console", PUB, "tms/v1/+/cmd/c-1"),
    (CON, "tms-console", PUB, "tms/v1/TC1/cmd"),
    (CON, "tms-console", PUB, "tms/v1/tms-console/cmd/c-1"),  # its own name's tree
    (CON, "tms-console", PUB, "tms/v1/tms-console/telemetry"),
    (CON, "tms-console", SUB, "tms/v1/+/telemetry"),
    (CON, "tms-console", SUB, "tms/v1/+/cmd/+"),
    (CON, "tms-console", SUB, "#"),
    # A support script publishes nothing and reads no commands.
    (SUP, "support", PUB, "tms/v1/TC1/cmd/c-1"),
    (SUP, "support", PUB, "tms/v1/TC1/telemetry"),
    (SUP, "support", SUB, "tms/v1/+/cmd/+"),
    (SUP, "support", SUB, "tms/v1/#"),
    (SUP, "support", SUB, "#"),
    # ... never another account's request or reply, nor the sender's side of its own.
    (SUP, "support", PUB, "tms/requests/other/cmd/r-1"),
    (SUP, "support", PUB, "tms/requests/+/cmd/r-1"),
    (SUP, "support", PUB, "tms/requests/support/cmd/+"),
    (SUP, "support", PUB, "tms/requests/support/cmd"),
    (SUP, "support", PUB, "tms/requests/support/cmd/r-1/x"),
    (SUP, "support", PUB, "tms/requests/support/reply/r-1"),
    (SUP, "support", PUB, "tms/v1/support/cmd/r-1"),
    (SUP, "support", SUB, "tms/requests/other/reply/+"),
    (SUP, "support", SUB, "tms/requests/+/reply/+"),
    (SUP, "support", SUB, "tms/requests/support/#"),
    (SUP, "support", SUB, "tms/requests/support/cmd/+"),
    (SUP, "support", SUB, "tms/requests/#"),
    (SUP, "support", SUB, "$share/g/tms/requests/other/reply/+"),
    # A name not fit for a topic level gets no grant that names the account.
    (SUP, "ops@example", PUB, "tms/requests/ops@example/cmd/r-1"),
    (SUP, "ops@example", SUB, "tms/requests/ops@example/reply/+"),
    (SUP, "%u", PUB, "tms/requests/%u/cmd/r-1"),
    (SUP, "a b", PUB, "tms/requests/a b/cmd/r-1"),
    # No one else touches the request tree.
    (TERM, "TC1", PUB, "tms/requests/TC1/cmd/r-1"),
    (TERM, "TC1", SUB, "tms/requests/TC1/reply/+"),
    (ING, "tms-ingest", SUB, "tms/requests/+/cmd/+"),
    (ING, "tms-ingest", PUB, "tms/requests/tms-ingest/cmd/r-1"),
    (CON, "tms-console", PUB, "tms/requests/support/cmd/r-1"),
    (CON, "tms-console", PUB, "tms/requests/+/reply/r-1"),
    (CON, "tms-console", SUB, "tms/requests/+/reply/+"),
    (CON, "tms-console", SUB, "tms/requests/#"),
]


@pytest.mark.parametrize(("kind", "username", "access", "topic"), ALLOWED)
def test_allowed(kind: AccountKind, username: str, access: Access, topic: str) -> None:
    assert is_allowed(kind, username, access, topic)


@pytest.mark.parametrize(("kind", "username", "access", "topic"), REFUSED)
def test_refused(kind: AccountKind, username: str, access: Access, topic: str) -> None:
    assert not is_allowed(kind, username, access, topic)


def test_every_kind_has_rules() -> None:
    assert set(GRANTS) == set(AccountKind)


def _block(lines: list[str], username: str) -> list[str]:
    """One account's lines of an acl_file, from its ``user`` line to the blank after it."""
    start = lines.index(f"user {username}")
    return lines[start : (lines + [""]).index("", start)]


def test_acl_file_uses_patterns_for_terminals_and_blocks_for_services() -> None:
    text = mosquitto_acl_text(
        [
            AclAccount("TC1", TERM),
            AclAccount("tms-ingest", ING),
            AclAccount("tms-console", CON),
            AclAccount("support", SUP),
        ]
    )
    lines = text.splitlines()
    assert "pattern write tms/v1/%u/telemetry" in lines
    assert "pattern write tms/v1/%u/cmd-result/+" in lines
    assert "pattern read tms/v1/%u/cmd/+" in lines
    assert "user TC1" not in lines  # the fleet is covered by the patterns
    ingest = lines.index("user tms-ingest")
    assert lines[ingest + 1] == "topic deny tms/v1/tms-ingest/#"
    assert [f"topic read {f}" for f in INGEST_FILTERS] == lines[ingest + 2 : ingest + 6]
    console = lines.index("user tms-console")
    assert lines[console + 2 : console + 6] == [
        "topic write tms/v1/+/cmd/+",
        "topic read tms/v1/+/cmd-result/+",
        f"topic read {COMMAND_REQUEST_FILTER}",
        "topic write tms/requests/+/reply/+",
    ]
    support_block = _block(lines, "support")
    assert support_block[1] == "topic deny tms/v1/support/#"
    # Mosquitto substitutes nothing in `topic` lines: the account's own name is written.
    writes = [line for line in support_block if "write" in line]
    assert writes == ["topic write tms/requests/support/cmd/+"]
    assert f"topic read {topics.command_reply_filter('support')}" in support_block
    assert OWN not in "".join(line for line in lines if line.startswith("topic"))


def test_acl_file_gives_no_named_grant_to_a_name_unfit_for_topics() -> None:
    text = mosquitto_acl_text([AclAccount("ops@example", SUP), AclAccount("tms-ingest", ING)])
    block = _block(text.splitlines(), "ops@example")
    assert block[1] == "topic deny tms/v1/ops@example/#"
    assert not any("requests" in line for line in block)
    assert "topic read tms/v1/+/telemetry" in block


def test_every_grant_that_names_the_account_is_a_whole_level() -> None:
    for grants in GRANTS.values():
        for grant in grants:
            levels = grant.topic_filter.split("/")
            assert all(level == OWN or OWN not in level for level in levels), grant


def test_acl_file_leaves_out_unusable_service_names() -> None:
    text = mosquitto_acl_text([AclAccount("bad/name", ING), AclAccount("#", CON)])
    assert "user" not in text


@pytest.mark.parametrize(
    "topic",
    ["tms/v1/TC1/status", "tms/v1/a.b-c_1/status", topics.status("TC-9")],
)
def test_presence_may_be_retained(topic: str) -> None:
    assert may_retain(topic)


@pytest.mark.parametrize(
    "topic",
    [
        "tms/v1/TC1/telemetry",
        "tms/v1/TC1/event",
        "tms/v1/TC1/cmd-result/c-1",
        "tms/v1/TC1/cmd/c-1",
        "tms/requests/support/cmd/r-1",
        "tms/requests/support/reply/r-1",
        "tms/v1/TC1/status/extra",
        "tms/v1/status",
        "tms/v2/TC1/status",
        "tms/v1/+/status",
        "tms/v1/#",
        "$SYS/broker/status",
        "",
    ],
)
def test_nothing_else_may_be_retained(topic: str) -> None:
    assert not may_retain(topic)


def test_every_topic_a_terminal_publishes_but_status_is_refused_retained() -> None:
    published = [g.topic_filter for g in GRANTS[TERM] if g.access is PUB]
    retained = [f for f in published if may_retain(f.replace(OWN, "TC1").replace("+", "c-1"))]
    assert retained == ["tms/v1/%u/status"]
