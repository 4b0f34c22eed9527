"""Console roles and their order, as pure functions (no Flask, no database)."""

from __future__ import annotations

from console.errors import UserError
from shared.models import Role

# Higher rank can do everything a lower rank can: admin > operator > support > viewer.
ROLE_RANK: dict[Role, int] = {
    Role.VIEWER: 0,
    Role.SUPPORT: 1,
    Role.OPERATOR: 2,
    Role.ADMIN: 3,
}


def parse_role(value: str) -> Role:
    """The Role named by ``value``; a clear error listing the valid names otherwise."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        names = ", ".join(role.value for role in Role)
        raise UserError(f"unknown role {value!r}: choose one of {names}") from None


def role_at_least(role: str, minimum: Role) -> bool:
    """True when ``role`` may do what ``minimum`` may; unknown roles may do nothing."""
    try:
        return ROLE_RANK[Role(role)] >= ROLE_RANK[minimum]
    except ValueError:
        return False
