"""The terminal registry: who may log in to the broker, and every change to that.

It holds provisioning (terminal and service-account credentials, and the accounts the
broker loads), the lifecycle steps (add, import, rotate, revoke, decommission, swap,
each with its audit record) and the CSV import's parsing. Its functions take a
``Session`` and never commit: the ``tms terminal``/``tms account`` commands, ``tms
up`` and the console own the transaction.

It may import ``shared/`` only; ``cli`` is ``tms terminal`` and ``tms account``.
``broker/`` imports it (the accounts it loads); ``console/`` and ``tms/`` import it; it imports none
of them, so the broker's rules and processes can change without touching it.
"""
