"""The exception root of the agent package."""

from shared.errors import TMSError


class AgentError(TMSError):
    """An agent or simulator that cannot start; the message says what to fix."""
