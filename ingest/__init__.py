"""Ingest: MQTT telemetry, presence, events and command results into PostgreSQL, in batches.

What it holds: the broker side (``mqtt``), parsing at the edge (``decode``), batching
(``batch``), the daemon that reads, batches, commits and only then acknowledges
(``daemon``), the batch writer (``writer``, its columns in ``telemetry_columns``,
``columns``, ``status``, ``sequence`` and ``sequence_store``), its side tasks
(``background``, ``sweep``, ``gap_repair``, ``retention``, ``sessions``), several
workers (``workers``), counters and ``/metrics``, and the alerting room
(``ingest.alerts``). ``service`` wires one process; ``cli`` is ``tms ingest``.

What it may import: ``shared`` and third-party libraries; never another component
(``agent``, ``broker``, ``console``, ``commands``, ``registry``) nor ``tms``. Inside,
``ingest.alerts`` sees only ``batch``, ``decode`` and ``errors`` of the rest.
"""
