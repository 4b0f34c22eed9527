"""deploy/emqx grants the same rows as broker.acl.GRANTS (the one source of the rules)."""

from __future__ import annotations

import re
from pathlib import Path

from broker.acl import GRANTS, OWN

EMQX = Path(__file__).resolve().parents[2] / "deploy" / "emqx"
_ROW = re.compile(r"\('([a-z-]+)',\s*'(publish|subscribe)',\s*'([^']+)'\)")


def _expected() -> set[tuple[str, str, str]]:
    return {
        (kind.value, grant.access.value, grant.topic_filter.replace(OWN, "${username}"))
        for kind, grants in GRANTS.items()
        for grant in grants
    }


def test_sql_and_hocon_match_the_grants() -> None:
    for name in ("authn-authz.sql", "emqx-tms.hocon"):
        rows = set(_ROW.findall((EMQX / name).read_text()))
        assert rows == _expected(), name


def test_authentication_uses_the_stored_hash_and_skips_revoked() -> None:
    text = (EMQX / "emqx-tms.hocon").read_text()
    assert "salt_position = suffix" in text and "name = sha512" in text
    assert text.count("revoked_at IS NULL") == 2
