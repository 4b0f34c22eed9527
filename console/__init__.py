"""The console: the operations team's web screens and the REST API (Flask).

One blueprint per screen, the app factory (``app``), access and roles (``access``,
``roles``), and the repository modules where all of its own queries live (``users``,
``fleet``, ``alert_repository``, ``dead_letter_repository``).

It may import ``shared/``, ``commands.queue`` (the command queue's repository) and
``registry/`` (terminal lifecycle actions); never ``agent/``, ``broker/``,
``ingest/`` or ``tms/`` (``tms/`` imports it to run it, not the other way round).
"""
