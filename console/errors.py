"""The exception root of the console package and its specific errors."""

from __future__ import annotations

from shared.errors import TMSError


class ConsoleError(TMSError):
    """Root of every error the console raises on purpose."""


class ConsoleConfigError(ConsoleError):
    """The console cannot start with the settings it was given."""


class UserError(ConsoleError, ValueError):
    """A user or token request that cannot be carried out (bad name, role, password...)."""

    def sentence(self) -> str:
        """The message as a sentence for a page: capital first letter, final stop."""
        text = str(self)
        return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
