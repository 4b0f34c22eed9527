"""Firmware rollouts: which terminals get a release, in which waves, at what pace, and
when a rollout must stop itself (thresholds, the health of terminals already updated,
each store's maintenance window). The rules are pure (``rollouts.plan`` and friends);
the process that drives them is built on the command queue (issue 16).

It may import ``shared/`` only; ``console/`` reads and changes rollouts through it
(tests/unit/test_import_graph.py).
"""
