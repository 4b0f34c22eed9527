"""Pure pieces of ingest's options: shared subscriptions, webhook signing, retry delays."""

from __future__ import annotations

from ingest.alerts.notify import retry_delay, sign, verify
from ingest.daemon import every_filter, stale_filters, subscription_filters
from ingest.sessions import retired_sessions, worker_client_ids
from ingest.workers import RestartPolicy, worker_settings
from shared.settings import IngestSettings
from shared.topics import INGEST_FILTERS


def test_shared_subscriptions_are_off_unless_asked_for() -> None:
    assert subscription_filters(IngestSettings()) == list(INGEST_FILTERS)
    shared = subscription_filters(IngestSettings(shared_group="ingest"))
    assert shared == [f"$share/ingest/{topic}" for topic in INGEST_FILTERS]


def test_a_session_drops_the_filters_of_the_other_mode() -> None:
    assert stale_filters(IngestSettings()) == [f"$share/ingest/{t}" for t in INGEST_FILTERS]
    assert stale_filters(IngestSettings(shared_group="g")) == list(INGEST_FILTERS)


def test_workers_get_their_own_client_id_and_metrics_port_on_one_shared_group() -> None:
    one = IngestSettings(client_id="ing", metrics_port=9100)
    assert worker_settings(one, 0) == one  # a single process keeps its plain subscription
    many = IngestSettings(client_id="ing", metrics_port=9100, workers=3)
    workers = [worker_settings(many, i) for i in range(3)]
    assert [w.client_id for w in workers] == ["ing", "ing-1", "ing-2"]
    assert [w.metrics_port for w in workers] == [9100, 9101, 9102]
    assert {w.shared_group for w in workers} == {"ingest"}
    custom = IngestSettings(shared_group="g", metrics_port=0, workers=2)
    assert [(w.shared_group, w.metrics_port) for w in (worker_settings(custom, 1),)] == [("g", 0)]


def test_a_retired_session_drops_both_forms_of_the_filters() -> None:
    shared = [f"$share/ingest/{t}" for t in INGEST_FILTERS]
    assert every_filter(IngestSettings()) == [*INGEST_FILTERS, *shared]
    assert every_filter(IngestSettings(shared_group="g"))[-1] == f"$share/g/{INGEST_FILTERS[-1]}"


def test_the_current_worker_ids_match_the_ids_the_workers_use() -> None:
    many = IngestSettings(client_id="ing", workers=3)
    started = {worker_settings(many, i).client_id for i in range(3)}
    assert worker_client_ids(many) == started == {"ing", "ing-1", "ing-2"}
    assert worker_client_ids(IngestSettings(client_id="ing")) == {"ing"}


def test_sessions_of_workers_no_longer_started_are_retired_and_no_others() -> None:
    registered = ["ing", "ing-1", "ing-2", "ing-10", "ing-x", "ingest", "other-1", "ing-2-1"]
    assert retired_sessions(registered, "ing", {"ing", "ing-1"}) == ["ing-10", "ing-2"]
    # back to one worker: every numbered session goes, the base id stays
    assert retired_sessions(registered, "ing", {"ing"}) == ["ing-1", "ing-10", "ing-2"]
    # a base id with regex characters is matched literally
    assert retired_sessions(["a.b-1", "axb-1"], "a.b", {"a.b"}) == ["a.b-1"]


def test_a_worker_that_keeps_dying_young_waits_longer_each_time() -> None:
    policy = RestartPolicy(first_s=1, max_s=8, healthy_after_s=60)
    delays: list[float] = []
    delay = None
    for _ in range(5):
        delay = policy.delay(delay, lived_s=2)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 8]
    assert policy.delay(8, lived_s=600) == 1  # it ran well for a while: start over


def test_webhook_signature_covers_timestamp_and_body() -> None:
    signature = sign("k", "1700000000", b'{"a":1}')
    assert signature.startswith("sha256=")
    assert verify("k", "1700000000", b'{"a":1}', signature)
    assert not verify("k", "1700000001", b'{"a":1}', signature)
    assert not verify("k", "1700000000", b'{"a":2}', signature)


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(n, 5, 60) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]
