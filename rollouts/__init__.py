"""Firmware rollouts: which terminals get a release, in which waves, at what pace, and
when a rollout must stop itself (thresholds, the health of terminals already updated,
each store's maintenance window), and the firmware library those rollouts take their
images from. The rules are pure: versions, targets, waves, windows, tasks, pace,
health and ``decide``, which names a rollout's next action; ``library`` and ``cli``
are the I/O edge (the database, the image store, the signing key).

It may import ``shared/`` only; ``console/`` reads and changes rollouts through it
(tests/unit/test_import_graph.py).
"""
