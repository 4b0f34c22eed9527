"""The ``tms`` command and the supervisor that runs the whole platform on one host."""
