"""The exception root of the rollouts package and its specific errors.

Each is a ``ValueError`` whose message a console form can show beside the field it
names: it says what is wrong and what would be accepted.
"""

from __future__ import annotations

from shared.errors import TMSError


class RolloutError(TMSError, ValueError):
    """Root of every error the rollout rules raise on purpose."""


class VersionError(RolloutError):
    """A firmware version that the rollout rules cannot order (a range bound, a release)."""


class TargetError(RolloutError):
    """A target that selects nothing sensible (an empty or inverted version range)."""


class WaveSpecError(RolloutError):
    """A wave spec that is not a list of cumulative percentages or of group sizes."""


class WindowError(RolloutError):
    """A maintenance window that is not ``[days] HH:MM-HH:MM``."""


class PolicyError(RolloutError):
    """A rollout policy with a threshold, limit or delay out of range."""


class FirmwareError(RolloutError):
    """A refused change to the firmware library; ``field`` names the form field (or
    ``key`` for the signing key) it belongs beside."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RolloutNotFound(RolloutError, LookupError):
    """No rollout has that id."""


class RolloutConflict(RolloutError):
    """The rollout's state does not allow that (resume a completed one, approve a wave
    that is open already): the console answers 409."""
