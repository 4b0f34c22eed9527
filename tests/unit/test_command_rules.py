"""The command catalogue and a command's life, as pure rules (shared/command_*.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.command_catalog import (
    CATALOG,
    MAX_EXPIRES_IN_S,
    CommandRefused,
    check_args,
    check_expiry,
    check_request,
    may_cancel,
    may_send,
)
from shared.command_states import (
    FINAL,
    CommandState,
    ResendPolicy,
    may_move,
    state_after_result,
)
from shared.messages import CommandStatus

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_the_catalogue_has_the_commands_operators_need() -> None:
    assert set(CATALOG) == {
        "ping",
        "diagnostics",
        "fetch_logs",
        "reboot",
        "restart_agent",
        "reset_usb",
        "set_config",
        "resend",
        "firmware",
    }
    # Asked by ingest's gap repair only: no person or script may send it.
    assert CATALOG["resend"].system
    # Sent by a rollout only, with a signed manifest no form could fill in by hand.
    assert CATALOG["firmware"].system


SENDABLE = {name for name, spec in CATALOG.items() if not spec.system}


def test_a_system_command_is_refused_to_every_role_with_why() -> None:
    for role in ("viewer", "support", "operator", "admin"):
        with pytest.raises(CommandRefused, match="sent by TMS itself"):
            check_request(role, "resend", {"stream": "abc", "ranges": [[1, 2]]})


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("viewer", set()),
        ("support", {"ping", "diagnostics", "fetch_logs"}),
        ("operator", SENDABLE),
        ("admin", SENDABLE),
        ("nobody", set()),
    ],
)
def test_roles_send_what_their_rank_allows(role: str, allowed: set[str]) -> None:
    assert {name for name in CATALOG if may_send(role, name)} == allowed
    assert not may_send(role, "format_disk")


def test_cancelling_is_for_the_sender_and_admins() -> None:
    assert may_cancel("operator", own=True) and may_cancel("support", own=True)
    assert not may_cancel("operator", own=False)
    assert may_cancel("admin", own=False)
    assert not may_cancel("viewer", own=True)


@pytest.mark.parametrize(
    ("name", "args", "says"),
    [
        ("format_disk", {}, "unknown command 'format_disk': choose one of ping,"),
        ("reboot", {"now": True}, "reboot: bad argument now: Extra inputs are not permitted"),
        ("fetch_logs", {"lines": 0}, "fetch_logs: bad argument lines:"),
        ("fetch_logs", {"lines": "many"}, "fetch_logs: bad argument lines:"),
        ("set_config", {}, "set_config needs at least one of: display_brightness"),
        ("set_config", {"beep_volume": 101}, "bad argument beep_volume"),
        ("set_config", {"timezone": "../etc"}, "bad argument timezone"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(name: str, args: dict, says: str) -> None:
    with pytest.raises(CommandRefused) as refused:
        check_args(name, args)
    assert says in str(refused.value)


def test_good_arguments_come_back_as_they_will_be_sent() -> None:
    assert check_args("ping", None) == {}
    assert check_args("fetch_logs", {}) == {"lines": 200}
    assert check_args("set_config", {"beep_volume": 40}) == {"beep_volume": 40}


def test_a_role_is_checked_before_the_arguments() -> None:
    with pytest.raises(CommandRefused, match="the support role may not send reboot"):
        check_request("support", "reboot", {"bad": 1})
    assert check_request("support", "diagnostics", {}) == {}


def test_expiry_is_bounded() -> None:
    assert check_expiry("ping", None) == CATALOG["ping"].expires_in_s
    assert check_expiry("ping", 60) == 60
    for bad in (0, -5, MAX_EXPIRES_IN_S + 1):
        with pytest.raises(CommandRefused, match="expires_in_s must be between"):
            check_expiry("ping", bad)


@given(st.sampled_from(list(CommandState)), st.sampled_from(list(CommandStatus)))
def test_nothing_leaves_a_final_state(current: CommandState, status: CommandStatus) -> None:
    after = state_after_result(current, status)
    if current in FINAL:
        assert after is None
    else:
        assert after in FINAL
    for target in CommandState:
        if current in FINAL:
            assert not may_move(current, target)


def test_results_map_to_their_states() -> None:
    assert state_after_result(CommandState.SENT, CommandStatus.OK) is CommandState.SUCCEEDED
    assert state_after_result(CommandState.SENT, CommandStatus.ERROR) is CommandState.FAILED
    assert state_after_result(CommandState.SENT, CommandStatus.REJECTED) is CommandState.REJECTED
    # A send committed by a sender that died before recording it: the answer proves it.
    assert state_after_result(CommandState.QUEUED, CommandStatus.OK) is CommandState.SUCCEEDED
    assert not may_move(CommandState.QUEUED, CommandState.SUCCEEDED)


def test_resends_back_off() -> None:
    policy = ResendPolicy(first_timeout_s=15, max_timeout_s=100)
    assert [policy.timeout_after(n).total_seconds() for n in (1, 2, 3, 4)] == [15, 30, 60, 100]
