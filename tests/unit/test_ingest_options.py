"""Pure pieces of ingest's options: shared subscriptions, webhook signing, retry delays."""

from __future__ import annotations

from ingest.notify import retry_delay, sign, verify
from ingest.service import subscription_filters
from shared.settings import IngestSettings
from shared.topics import INGEST_FILTERS


def test_shared_subscriptions_are_off_unless_asked_for() -> None:
    assert subscription_filters(IngestSettings()) == list(INGEST_FILTERS)
    shared = subscription_filters(IngestSettings(shared_group="ingest"))
    assert shared == [f"$share/ingest/{topic}" for topic in INGEST_FILTERS]


def test_webhook_signature_covers_timestamp_and_body() -> None:
    signature = sign("k", "1700000000", b'{"a":1}')
    assert signature.startswith("sha256=")
    assert verify("k", "1700000000", b'{"a":1}', signature)
    assert not verify("k", "1700000001", b'{"a":1}', signature)
    assert not verify("k", "1700000000", b'{"a":2}', signature)


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(n, 5, 60) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]
