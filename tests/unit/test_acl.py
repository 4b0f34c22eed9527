"""The broker's access rules, row by row: every allowed and every refused case."""

import pytest

from broker.acl import GRANTS, Access, AclAccount, is_allowed, mosquitto_acl_text
from shared.models import AccountKind
from shared.topics import INGEST_FILTERS

TERM, ING, CON, SUP = (
    AccountKind.TERMINAL,
    AccountKind.INGEST,
    AccountKind.CONSOLE,
    AccountKind.SUPPORT_SCRIPT,
)
PUB, SUB = Access.PUBLISH, Access.SUBSCRIBE

ALLOWED = [
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
    # A support script reads what terminals publish.
    (SUP, "support", SUB, "tms/v1/+/telemetry"),
    (SUP, "support", SUB, "tms/v1/+/status"),
    (SUP, "support", SUB, "tms/v1/+/event"),
    (SUP, "support", SUB, "tms/v1/+/cmd-result/+"),
    (SUP, "support", SUB, "tms/v1/TC1/telemetry"),
]

REFUSED = [
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
]


@pytest.mark.parametrize(("kind", "username", "access", "topic"), ALLOWED)
def test_allowed(kind: AccountKind, username: str, access: Access, topic: str) -> None:
    assert is_allowed(kind, username, access, topic)


@pytest.mark.parametrize(("kind", "username", "access", "topic"), REFUSED)
def test_refused(kind: AccountKind, username: str, access: Access, topic: str) -> None:
    assert not is_allowed(kind, username, access, topic)


def test_every_kind_has_rules() -> None:
    assert set(GRANTS) == set(AccountKind)


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
    assert lines[console + 2 : console + 4] == [
        "topic write tms/v1/+/cmd/+",
        "topic read tms/v1/+/cmd-result/+",
    ]
    support = lines.index("user support")
    support_block = lines[support : lines.index("", support)]
    assert support_block[1] == "topic deny tms/v1/support/#"
    assert not any("write" in line for line in support_block)


def test_acl_file_leaves_out_unusable_service_names() -> None:
    text = mosquitto_acl_text([AclAccount("bad/name", ING), AclAccount("#", CON)])
    assert "user" not in text
