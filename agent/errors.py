"""The exception root of the agent package, and the TC-200 faults the driver reports.

Each ``TerminalFault`` carries the ``DeviceStatus`` the agent publishes for it and a
short event code, so the runtime turns any driver failure into a status and an event
without knowing about USB.
"""

from __future__ import annotations

from typing import ClassVar

from shared.errors import TMSError
from shared.messages import DeviceStatus

UDEV_RULE_FILE = "deploy/udev/99-tc200.rules"
UDEV_ADVICE = (
    f"install the udev rule: `sudo cp {UDEV_RULE_FILE} /etc/udev/rules.d/ && "
    "sudo udevadm control --reload-rules && sudo udevadm trigger`, add the agent's user "
    "to the plugdev group, then unplug and replug the terminal"
)


class AgentError(TMSError):
    """An agent or simulator that cannot start; the message says what to fix."""


class TerminalFault(AgentError):
    """The TC-200 cannot be reached or answered wrongly; reported, retried, never fatal."""

    status: ClassVar[DeviceStatus] = DeviceStatus.ERROR
    code: ClassVar[str] = "USB-ERROR"


class TerminalUnplugged(TerminalFault):
    status = DeviceStatus.UNPLUGGED
    code = "USB-UNPLUGGED"


class TerminalBusy(TerminalFault):
    """Another process (a second agent, a vendor tool) holds the terminal's interface."""

    status = DeviceStatus.BUSY
    code = "USB-BUSY"


class TerminalPermissionDenied(TerminalFault):
    code = "USB-PERMISSION"


class TerminalTimeout(TerminalFault):
    code = "USB-TIMEOUT"


class TerminalProtocolError(TerminalFault):
    """A corrupt or out-of-sequence frame, or a payload that does not decode."""

    code = "USB-PROTOCOL"


class TerminalRefused(TerminalFault):
    """The terminal understood the request and refused it (result code in the message)."""

    code = "TC200-REFUSED"


class UsbUnavailable(TerminalFault):
    """No USB library: libusb is missing on this PC."""

    code = "USB-NO-BACKEND"
