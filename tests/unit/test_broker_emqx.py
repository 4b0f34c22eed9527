"""deploy/emqx grants the same rows as broker.acl.GRANTS (the one source of the rules)."""

from __future__ import annotations

import re
from pathlib import Path

from broker.acl import GRANTS, OWN, Access, Grant, may_retain
from shared.topics import ACCOUNT_PATTERN

EMQX = Path(__file__).resolve().parents[2] / "deploy" / "emqx"
_ROW = re.compile(r"\('([a-z-]+)',\s*'(publish|subscribe)',\s*'([^']+)',\s*'(false|all)'\)")


def emqx_retain(grant: Grant) -> str:
    """The rule's retain field: 'all' where a message may be retained, else 'false'."""
    if grant.access is Access.SUBSCRIBE:
        return "all"
    example = grant.topic_filter.replace(OWN, "TC1").replace("+", "x")
    return "all" if may_retain(example) else "false"


def _expected() -> set[tuple[str, str, str, str]]:
    return {
        (kind.value, grant.access.value, grant.topic_filter, emqx_retain(grant))
        for kind, grants in GRANTS.items()
        for grant in grants
    }


def test_sql_and_hocon_match_the_grants() -> None:
    for name in ("authn-authz.sql", "emqx-tms.hocon"):
        rows = set(_ROW.findall((EMQX / name).read_text()))
        assert rows == _expected(), name


def test_only_status_may_be_published_retained_on_emqx() -> None:
    retained = {row[2] for row in _expected() if row[1] == "publish" and row[3] == "all"}
    # A terminal's own presence, and a bridge relaying its region's terminals' presence.
    assert retained == {"tms/v1/%u/status", "tms/v1/+/status"}
    for name in ("authn-authz.sql", "emqx-tms.hocon"):
        queries = _queries(name)
        assert "AS topic, a.retain" in queries and "a(kind, action, topic, retain)" in queries


def _queries(name: str) -> str:
    text = (EMQX / name).read_text()
    if name.endswith(".hocon"):
        return "\n".join(re.findall(r'query = "([^"]*)"', text))
    return "\n".join(line for line in text.splitlines() if not line.startswith("--"))


def test_own_name_is_substituted_in_sql_and_only_for_a_topic_fit_name() -> None:
    for name in ("authn-authz.sql", "emqx-tms.hocon"):
        queries = _queries(name)
        assert f"replace(a.topic, '{OWN}', c.username) AS topic" in queries, name
        assert f"c.username ~ '^{ACCOUNT_PATTERN}$'" in queries, name
        # EMQX binds every ${...} of a query, also inside a quoted string.
        literals = re.findall(r"'[^']*'", queries)
        assert literals and not [lit for lit in literals if "${" in lit], name


def test_authentication_uses_the_stored_hash_and_skips_revoked() -> None:
    text = (EMQX / "emqx-tms.hocon").read_text()
    assert "salt_position = suffix" in text and "name = sha512" in text
    assert text.count("revoked_at IS NULL") == 2


def test_emqx_takes_the_same_largest_packet_as_mosquitto() -> None:
    from shared.settings import BrokerSettings

    text = (EMQX / "emqx-tms.hocon").read_text()
    limit = BrokerSettings().max_packet_bytes
    assert f'max_packet_size = "{limit // 1024}KB"' in text and limit % 1024 == 0
