"""The exception root of the shared package and its specific errors."""


class TMSError(Exception):
    """Root of every error TMS raises on purpose; the message tells the user what to do."""


class TopicError(TMSError, ValueError):
    """A topic string that is not part of the TMS v1 topic tree."""


class MessageError(TMSError, ValueError):
    """A payload that does not match its message schema.

    ``field`` names the first offending field (dotted path), or is empty when the
    payload as a whole is wrong (not JSON, not an object).
    """

    def __init__(self, kind: str, field: str, reason: str) -> None:
        self.kind = kind
        self.field = field
        self.reason = reason
        where = f"field {field!r}" if field else "payload"
        super().__init__(f"invalid {kind} message: {where}: {reason}")


class SettingsError(TMSError):
    """A configuration file or TMS_* variable that cannot be used."""
