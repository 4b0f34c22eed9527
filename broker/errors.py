"""The exception root of the broker package and its specific errors."""

from shared.errors import TMSError


class BrokerError(TMSError):
    """Root of every error the broker component raises on purpose."""


class MosquittoError(BrokerError):
    """Mosquitto is missing, cannot start, or stopped on its own."""
