"""When to send telemetry, and what: the heartbeat schedule and the Telemetry built from a reading.

Telemetry goes out every interval and at once when the device's status changes, so a
terminal that fails between heartbeats is seen within one status poll, not one interval.
"""

from __future__ import annotations

from agent.device import DeviceState
from shared.messages import DeviceStatus, HostMetrics, Metrics, Telemetry


def telemetry_from(state: DeviceState, host: HostMetrics) -> Telemetry:
    return Telemetry(
        status=state.status,
        model=state.model,
        firmware=state.firmware,
        uptime_s=state.uptime_s,
        terminal=Metrics(cpu=state.cpu, memory=state.memory, disk=state.disk),
        host=host,
        errors=list(state.errors),
    )


class HeartbeatSchedule:
    """Decides, on each status poll, whether a heartbeat is due; times are monotonic seconds."""

    def __init__(self, interval_s: float, first_delay_s: float, now: float) -> None:
        if interval_s <= 0 or first_delay_s < 0:
            raise ValueError("a heartbeat needs interval_s > 0 and first_delay_s >= 0")
        self.interval_s = interval_s
        self.next_due = now + first_delay_s
        self.last_status: DeviceStatus | None = None

    def should_send(self, status: DeviceStatus, now: float) -> bool:
        changed = self.last_status is not None and status != self.last_status
        return changed or now >= self.next_due

    def sent(self, status: DeviceStatus, now: float) -> None:
        self.last_status = status
        self.next_due = now + self.interval_s

    def seconds_until_next_poll(self, now: float, poll_interval_s: float) -> float:
        return max(0.0, min(poll_interval_s, self.next_due - now))
