"""The broker: running Mosquitto (or amqtt in process, EMQX's configuration) for TMS.

What it holds: the Mosquitto process and its generated configuration (``mosquitto``,
the C plugin in ``mosquitto_plugin/``), the amqtt broker and its plugins
(``amqtt_broker``, ``amqtt_plugins``, ``amqtt_service``, ``auth_plugin``,
``packet_limit``), the access rules (``acl``), login throttling, certificates
(``certs``), and the service that keeps the broker's accounts in step with the
database (``service``, ``credential_sync``); ``cli`` is ``tms broker`` and ``tms certs``.

It may import ``shared/`` and ``registry/`` (the accounts it loads); never ``agent/``,
``ingest/``, ``console/``, ``commands/`` or ``tms/`` (tests/unit/test_import_graph.py).
"""
