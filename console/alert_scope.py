"""What an alert is about, read from its scope: besides a terminal or a store PC, a
rollout ("rollout:<id>"), which the rollout driver raises with no terminal."""

from __future__ import annotations

ROLLOUT_PREFIX = "rollout:"
# The console's id paths take PostgreSQL integers (int(max=...)): a larger number would
# be a link to nothing.
_ID_MAX = 2**31 - 1


def rollout_of(scope: str | None) -> int | None:
    """The rollout id of a ``rollout:<id>`` scope; None for any other scope."""
    if not scope or not scope.startswith(ROLLOUT_PREFIX):
        return None
    digits = scope.removeprefix(ROLLOUT_PREFIX)
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 10:
        return None
    number = int(digits)
    return number if 0 < number <= _ID_MAX else None
