"""The exception root of the registry package and its specific errors."""

from shared.errors import TMSError


class RegistryError(TMSError):
    """Root of every error the terminal registry raises on purpose."""


class ProvisioningError(RegistryError):
    """A terminal or service account that cannot be created or changed as asked."""
