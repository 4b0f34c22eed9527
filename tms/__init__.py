"""The ``tms`` command and the supervisor that runs the whole platform on one host.

The composition root: it may import every component (each component's command is
named by string in ``tms/cli.py`` and imported only when run); no component imports
it (tests/unit/test_import_graph.py).
"""
