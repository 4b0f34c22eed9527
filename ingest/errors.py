"""The exception root of the ingest package and its specific errors."""

from shared.errors import TMSError


class IngestError(TMSError):
    """Root of every error the ingest daemon raises on purpose."""


class DatabaseUnavailableError(IngestError):
    """PostgreSQL cannot be reached or gave a transient error; the batch is retried."""


class BatchRefusedError(IngestError):
    """PostgreSQL refused the batch's data; it is written again message by message."""


class IngestConfigError(IngestError):
    """A setting the daemon needs is missing or unusable."""
