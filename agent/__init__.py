"""The agent component of TMS: the store-PC process that reads a TC-200 over USB.

It publishes the terminal's heartbeat, presence and events over MQTT with the terminal's
own credentials, queues them on disk while the broker is away, and runs remote commands.
It may import ``shared`` and its libraries (pyusb, aiomqtt, psutil); never ``ingest``,
``console``, ``broker``, ``commands`` or ``registry``, nor ``tms``
(tests/unit/test_import_graph.py). The simulator lives in ``agent.sim``, which the
agent itself never imports (only ``agent/cli.py``, the composition root, does).
"""
