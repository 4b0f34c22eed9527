"""The ingest component of TMS."""
