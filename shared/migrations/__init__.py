"""Alembic migrations of the TMS schema; run them with ``tms db upgrade``."""
