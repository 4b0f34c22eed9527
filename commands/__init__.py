"""Remote commands: the queue the console, the API and support scripts add to, and the
sender (``tms commands``) that publishes it to terminals. Design: docs/commands.md.

It may import ``shared/`` only; ``console/`` imports its queue (``commands.queue``)
(tests/unit/test_import_graph.py).
"""
