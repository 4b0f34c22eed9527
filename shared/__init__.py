"""What more than one TMS component needs: topics, message schemas, tables, settings.

Also the command catalogue and states, the platform status file's format, the
command-line support every ``tms`` subcommand uses (``cli_support``), ports, backoff
and process lifetime helpers, and the database migrations. It is below everything:
it imports no component (tests/unit/test_import_graph.py).
"""
