"""The counters a committed batch adds, as /metrics serves them (no server needed)."""

from __future__ import annotations

from prometheus_client import generate_latest

from ingest.counters import IngestCounters
from ingest.metrics import Health, make_registry
from ingest.writer import WriteResult


def test_command_results_are_counted_and_served() -> None:
    counters = IngestCounters()
    counters.add_batch(3, WriteResult(commands_finished=2, command_duplicates=1))
    counters.add_batch(1, WriteResult(command_duplicates=1))
    assert (counters.commands_finished, counters.command_duplicates) == (2, 2)
    assert "command_duplicates=2" in counters.summary()
    text = generate_latest(make_registry(counters, lambda: Health(True, True, 0))).decode()
    assert "tms_ingest_commands_finished_total 2.0" in text
    assert "tms_ingest_command_duplicates_total 2.0" in text
