"""A terminal's tags: the rule for a tag and a set of them (pure), and changing a
terminal's tags with its audit row (the console's terminal page, ``tms terminal tag``).

Tags are free labels that rollouts target ("pilot", "region:north"): a terminal is in a
rollout's target only if it carries every tag the target names, so a tag is matched
exactly, letter case included. A terminal's tags are kept sorted and each once: a set
has no order, and a sorted list makes "nothing changed" and the audit's before and after
plain to compare.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import Session, col, select

from registry.errors import ProvisioningError
from registry.lifecycle import Actor
from shared import audit_trail
from shared.models import Terminal, utcnow

TAG_MAX = 64  # the column is varchar(64)[]
TAGS_MAX = 20
_TAG = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_RULE = f"1 to {TAG_MAX} letters, digits and . _ : - (no spaces)"


class TagError(ProvisioningError):
    """Tags that break the rule; the message says which and what is allowed."""


def is_tag(text: str) -> bool:
    return _TAG.fullmatch(text) is not None


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """``tags`` sorted, each once; ``TagError`` for a bad one or more than ``TAGS_MAX``."""
    unique = sorted(set(tags))
    bad = [tag for tag in unique if not is_tag(tag)]
    if bad:
        shown = ", ".join(repr(tag[: TAG_MAX + 1]) for tag in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        noun = "is not a tag" if len(bad) == 1 else "are not tags"
        raise TagError(f"{shown}{more} {noun}: a tag is {_RULE}")
    if len(unique) > TAGS_MAX:
        raise TagError(f"a terminal carries at most {TAGS_MAX} tags, not {len(unique)}")
    return tuple(unique)


def parse_tags(text: str) -> tuple[str, ...]:
    """Tags typed as a comma-separated list ("pilot, region:north"); blank items are
    ignored, so an empty text is no tags."""
    return check_tags(item.strip() for item in text.split(",") if item.strip())


def edited_tags(
    current: Iterable[str],
    *,
    replace: Iterable[str] | None = None,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
) -> tuple[str, ...]:
    """The tags after an edit: ``replace`` (or the current ones), plus ``add``, minus
    ``remove``. New tags are checked; removing a tag the terminal lacks is no error, and
    an old tag that breaks today's rule may still be removed."""
    added = check_tags([*(replace if replace is not None else ()), *add])
    kept = set(current) if replace is None else set()
    after = (kept | set(added)) - set(remove)
    if len(after) > TAGS_MAX:
        raise TagError(f"a terminal carries at most {TAGS_MAX} tags, not {len(after)}")
    return tuple(sorted(after))


@dataclass(frozen=True, slots=True)
class TagChange:
    serial: str
    before: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.before != self.after


def change_tags(
    session: Session,
    actor: Actor,
    serial: str,
    *,
    replace: Iterable[str] | None = None,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
) -> TagChange:
    """Edit the terminal's tags (see ``edited_tags``) and audit the change, in the
    caller's transaction (never commits). The row is locked first, so two edits at
    once apply one after the other instead of one losing the other's tags."""
    terminal = session.exec(
        select(Terminal).where(col(Terminal.serial) == serial).with_for_update(key_share=True)
    ).first()
    if terminal is None:
        raise ProvisioningError(f"there is no terminal with serial {serial!r}")
    before = tuple(sorted(terminal.tags or ()))
    after = edited_tags(before, replace=replace, add=add, remove=remove)
    change = TagChange(serial, before, after)
    if change.changed:
        terminal.tags = list(after)
        terminal.updated_at = utcnow()
        session.add(terminal)
        detail = {"from": list(before), "to": list(after)}
        audit_trail.record(session, actor.name, "terminal.tags", serial, detail, actor.remote_addr)
        session.flush()
    return change
