"""Who may publish and subscribe where: the broker's access rules, as data and one check.

``GRANTS`` is the single source of truth. ``is_allowed`` evaluates it (deny by default),
and ``mosquitto_acl_text`` renders the same grants as a Mosquitto ``acl_file``, so the
embedded broker and any future broker plugin enforce exactly one policy.

Topics in a grant are MQTT filters in which ``%u`` stands for the account's own
username (for a terminal, its serial; for a support script, its account name in the
request tree). A subscription is allowed only when every topic its filter can match is
covered by one grant, so ``#``, another terminal's serial or another account's
requests never pass. A grant with ``%u`` applies only to a username that is valid where
it is substituted (a serial, or an account name of the request tree).

Mosquitto 2.0.11 enforces an ``acl_file`` per message, not per SUBSCRIBE: every SUBACK
is granted and each delivery is checked against the read rules. The effect for a
subscriber is the same, with one gap: anyone may join a ``$share/<group>/`` group, and
messages the broker hands to a member that may not read them are dropped. So services
must not rely on shared subscriptions while Mosquitto's acl_file is the enforcer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from shared import topics
from shared.errors import TopicError
from shared.models import AccountKind

OWN = "%u"
SHARE_PREFIX = "$share/"


class Access(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


@dataclass(frozen=True, slots=True)
class Grant:
    access: Access
    topic_filter: str  # may contain OWN as a whole level


_ROOT = topics.ROOT
_REQUESTS = topics.REQUESTS_ROOT
_TERMINAL_TOPICS = ("telemetry", "status", "event", "cmd-result/+")

GRANTS: Mapping[AccountKind, tuple[Grant, ...]] = {
    AccountKind.TERMINAL: (
        *(Grant(Access.PUBLISH, f"{_ROOT}/{OWN}/{leaf}") for leaf in _TERMINAL_TOPICS),
        Grant(Access.SUBSCRIBE, f"{_ROOT}/{OWN}/cmd/+"),
    ),
    AccountKind.INGEST: tuple(Grant(Access.SUBSCRIBE, f) for f in topics.INGEST_FILTERS),
    AccountKind.CONSOLE: (
        Grant(Access.PUBLISH, f"{_ROOT}/+/cmd/+"),
        Grant(Access.SUBSCRIBE, f"{_ROOT}/+/cmd-result/+"),
        # The command sender: every script's requests in, the replies out.
        Grant(Access.SUBSCRIBE, topics.COMMAND_REQUEST_FILTER),
        Grant(Access.PUBLISH, f"{_REQUESTS}/+/reply/+"),
    ),
    AccountKind.SUPPORT_SCRIPT: (
        *(Grant(Access.SUBSCRIBE, f"{_ROOT}/+/{leaf}") for leaf in _TERMINAL_TOPICS),
        # Commands only by asking the sender, under its own name, never on a cmd/ topic.
        Grant(Access.PUBLISH, f"{_REQUESTS}/{OWN}/cmd/+"),
        Grant(Access.SUBSCRIBE, f"{_REQUESTS}/{OWN}/reply/+"),
    ),
    # A regional broker checks each terminal against its own topics (the same grants,
    # from the same database) before its bridge relays anything; the core then lets the
    # bridge speak for every terminal, so a bridge account is as trusted as its host.
    AccountKind.BRIDGE: (
        *(Grant(Access.PUBLISH, f"{_ROOT}/+/{leaf}") for leaf in _TERMINAL_TOPICS),
        Grant(Access.SUBSCRIBE, f"{_ROOT}/+/cmd/+"),
    ),
}


def _covers(grant_levels: list[str], filter_levels: list[str]) -> bool:
    """True when every topic ``filter_levels`` matches also matches ``grant_levels``."""
    for index, wanted in enumerate(filter_levels):
        if index >= len(grant_levels):
            return False
        granted = grant_levels[index]
        if granted == "#":
            return True
        if wanted == "#":
            return False  # a multi-level filter is wider than any single grant level
        if granted == "+":
            continue  # '+' in the filter, or a literal: both stay within one level
        if wanted != granted:
            return False
    return len(filter_levels) == len(grant_levels)


def _strip_share(topic_filter: str) -> str | None:
    """``$share/<group>/<filter>`` -> ``<filter>``; None if the share syntax is wrong."""
    group, _, rest = topic_filter[len(SHARE_PREFIX) :].partition("/")
    if not group or not rest or "+" in group or "#" in group:
        return None
    return rest


def _own_username_ok(kind: AccountKind, username: str) -> bool:
    # The username is substituted into topics, so it must not carry separators or
    # wildcards; a terminal's must also be a valid serial since it names its topics.
    if kind is AccountKind.TERMINAL:
        return topics.is_valid_serial(username)
    return bool(username) and not any(c in username for c in "/+#\x00")


def _substituted(grant: Grant, username: str) -> list[str] | None:
    """The grant's levels with ``%u`` replaced by ``username``; None when the grant
    names the account and ``username`` is not valid as a name in the request tree
    (a terminal's username is checked as a serial before this)."""
    levels = grant.topic_filter.split("/")
    if OWN not in levels:
        return levels
    if not topics.is_valid_account(username):
        return None
    return [username if level == OWN else level for level in levels]


def is_allowed(kind: AccountKind, username: str, access: Access, topic: str) -> bool:
    """May this account publish to ``topic`` / subscribe to the filter ``topic``?"""
    if not _own_username_ok(kind, username):
        return False
    try:
        if access is Access.PUBLISH:
            topics.check_publish_topic(topic)
        else:
            topics.check_filter(topic)
    except TopicError:
        return False
    if access is Access.SUBSCRIBE and topic.startswith(SHARE_PREFIX):
        stripped = _strip_share(topic)
        if stripped is None:
            return False
        topic = stripped
    if topic.startswith("$"):
        return False  # $SYS and other broker-internal trees are for no account
    levels = topic.split("/")
    if kind is not AccountKind.TERMINAL and levels[:3] == [*_ROOT.split("/"), username]:
        # The terminal pattern grants would also apply to a service account's own
        # name in Mosquitto; its acl block denies that tree, and so does this check.
        return False
    for grant in GRANTS.get(kind, ()):
        if grant.access is access:
            grant_levels = _substituted(grant, username)
            if grant_levels is not None and _covers(grant_levels, levels):
                return True
    return False


# The only topics on which a broker may keep a message (the retain flag): a terminal's
# presence, which its last will also sets. A retained heartbeat, event or result would
# be handed again to every new subscriber and written again by ingest, so each broker
# refuses such a publish like one on a forbidden topic (tms_auth.c gets this filter as
# plugin_opt_retain_filter; amqtt and EMQX are given it from here).
RETAINABLE_FILTERS = (f"{_ROOT}/+/status",)


def may_retain(topic: str) -> bool:
    """May a message published to ``topic`` carry the retain flag?"""
    try:
        topics.check_publish_topic(topic)
    except TopicError:
        return False
    levels = topic.split("/")
    return any(_covers(f.split("/"), levels) for f in RETAINABLE_FILTERS)


@dataclass(frozen=True, slots=True)
class AclAccount:
    """What the ACL renderer needs to know about one broker account."""

    username: str
    kind: AccountKind


_MOSQUITTO_ACCESS = {Access.PUBLISH: "write", Access.SUBSCRIBE: "read"}


def mosquitto_acl_text(accounts: Iterable[AclAccount]) -> str:
    """Render ``GRANTS`` as a Mosquitto 2.0 ``acl_file``.

    Terminal grants become ``pattern`` lines (``%u`` substituted by Mosquitto), so the
    file does not grow with the fleet. Pattern lines apply to every user, so each
    service account's block starts with a ``deny`` of its own ``%u`` tree (Mosquitto
    checks a user's denials first); service grants are literal ``topic`` lines, in which
    Mosquitto substitutes nothing, so ``%u`` is replaced here by the account's name (and
    a grant that names the account is left out for a name not valid in its topics).
    """
    lines = ["# Written by `tms broker` from the database; edits are overwritten.", ""]
    for grant in GRANTS[AccountKind.TERMINAL]:
        lines.append(f"pattern {_MOSQUITTO_ACCESS[grant.access]} {grant.topic_filter}")
    for account in sorted(accounts, key=lambda a: a.username):
        if account.kind is AccountKind.TERMINAL or not _own_username_ok(
            account.kind, account.username
        ):
            continue
        lines += ["", f"user {account.username}"]
        lines.append(f"topic deny {_ROOT}/{account.username}/#")
        for grant in GRANTS.get(account.kind, ()):
            levels = _substituted(grant, account.username)
            if levels is not None:
                lines.append(f"topic {_MOSQUITTO_ACCESS[grant.access]} {'/'.join(levels)}")
    return "\n".join(lines) + "\n"


# Rules beyond topics, which the Mosquitto plugin (tms_auth.c) applies from the accounts
# file the broker service writes, and the amqtt auth plugin applies directly.
SHARED_SUBSCRIPTION_KINDS = frozenset({AccountKind.INGEST})


def may_join_shared_group(kind: AccountKind) -> bool:
    """May this account SUBSCRIBE to ``$share/<group>/...`` at all?

    A member of a share group takes its turn of the group's messages, and Mosquitto
    2.0.11 filters them only at delivery, so a member that may not read them makes them
    vanish. Only ingest splits its load that way.
    """
    return kind in SHARED_SUBSCRIPTION_KINDS


def client_id_allowed(
    kind: AccountKind, username: str, client_id: str | None, is_account: Callable[[str], bool]
) -> bool:
    """May ``username`` connect with ``client_id``?

    A CONNECT with a connected client's id takes that session over, so a client id that
    names an account belongs to that account alone, and a terminal must use its serial.
    """
    if not client_id:
        return kind is not AccountKind.TERMINAL  # the broker assigns a fresh one
    if kind is AccountKind.TERMINAL:
        return client_id == username
    return client_id == username or not is_account(client_id)
