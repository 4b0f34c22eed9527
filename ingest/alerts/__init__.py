"""Alerting: rules and their decisions, the alerts and storm incidents, notifications.

What it holds: ``config`` (``config/alerts.toml`` as one frozen object), ``thresholds``
and ``rules`` (metric and event rules over a batch, with thresholds held in memory),
``step`` (the rules as a step of each batch's commit, which the daemon hands the batch writer),
``plan`` and ``storm`` (pure decisions: which alerts to open, bump or resolve, and an
incident's next step), ``store`` and ``incidents`` (applying them in PostgreSQL,
inside the caller's transaction), ``outbox`` (queueing notifications) and ``notify``
(delivering them by e-mail and webhook).

What it may import: ``shared``, the standard library and its database and HTTP
libraries, and from the rest of ingest only what describes a batch (``ingest.batch``,
``ingest.decode``), ``ingest.errors`` and the ``ingest.columns`` helper. The daemon,
the batch writer and the sweep call into this package; it never calls back into them.
"""
