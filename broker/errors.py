"""The exception root of the broker package and its specific errors."""

from shared.errors import TMSError


class BrokerError(TMSError):
    """Root of every error the broker component raises on purpose."""


class ProvisioningError(BrokerError):
    """A terminal or service account that cannot be created or changed as asked."""


class MosquittoError(BrokerError):
    """Mosquitto is missing, cannot start, or stopped on its own."""
