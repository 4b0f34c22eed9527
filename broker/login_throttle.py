"""Brute-force defence for broker logins: failures per client id and per address (pure).

Each failed login counts against the CONNECT's client id and its source address.
Past ``delay_after`` recent failures a key's next attempts are slowed (the broker
waits before answering), past ``lockout_after`` the key is refused outright for
``lockout_s`` seconds, even with the right secret, so guessing stops paying off.
Old failures fall out of the count after ``window_s``. The clock is injected.

Locking a client id also keeps its real owner from reconnecting until the lockout
ends; a connected terminal is never affected (the broker checks a CONNECT before it
touches the existing session). The counters are the metric: ``stats`` is logged.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    delay_after: int = 5
    lockout_after: int = 10
    window_s: float = 60.0
    lockout_s: float = 300.0
    delay_step_s: float = 0.5
    delay_max_s: float = 5.0
    max_keys: int = 100_000  # bounded memory under a flood of random client ids


@dataclass(frozen=True, slots=True)
class Verdict:
    refused: bool
    delay_s: float = 0.0
    locked_key: str | None = None


@dataclass
class ThrottleStats:
    failures: int = 0
    successes: int = 0
    delayed: int = 0
    refused_locked: int = 0
    lockouts: int = 0


@dataclass
class _KeyState:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(
        self, policy: ThrottlePolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        self.stats = ThrottleStats()
        self._keys: dict[str, _KeyState] = {}

    def _recent(self, key: str, now: float) -> _KeyState | None:
        state = self._keys.get(key)
        if state is None:
            return None
        while state.failures and state.failures[0] < now - self.policy.window_s:
            state.failures.popleft()
        if not state.failures and state.locked_until <= now:
            del self._keys[key]
            return None
        return state

    def before_attempt(self, keys: Iterable[str]) -> Verdict:
        """May a login with these keys be checked now, and after how long a pause?"""
        now = self.clock()
        worst = 0
        for key in keys:
            state = self._recent(key, now)
            if state is None:
                continue
            if state.locked_until > now:
                self.stats.refused_locked += 1
                return Verdict(refused=True, locked_key=key)
            worst = max(worst, len(state.failures))
        if worst < self.policy.delay_after:
            return Verdict(refused=False)
        self.stats.delayed += 1
        steps = worst - self.policy.delay_after + 1
        return Verdict(False, min(self.policy.delay_max_s, steps * self.policy.delay_step_s))

    def record_failure(self, keys: Iterable[str]) -> list[str]:
        """Count a failed login; returns the keys that became locked by it."""
        now = self.clock()
        self.stats.failures += 1
        locked = []
        for key in keys:
            state = self._recent(key, now)
            if state is None:
                if len(self._keys) >= self.policy.max_keys:
                    self._evict(now)
                state = self._keys.setdefault(key, _KeyState())
            state.failures.append(now)
            if len(state.failures) >= self.policy.lockout_after and state.locked_until <= now:
                state.locked_until = now + self.policy.lockout_s
                state.failures.clear()
                self.stats.lockouts += 1
                locked.append(key)
        return locked

    def record_success(self, keys: Iterable[str]) -> None:
        self.stats.successes += 1
        now = self.clock()
        for key in keys:
            state = self._recent(key, now)
            if state is not None and state.locked_until <= now:
                del self._keys[key]

    def _evict(self, now: float) -> None:
        for key in list(self._keys):
            self._recent(key, now)
        while len(self._keys) >= self.policy.max_keys:
            # Oldest inserted first: a flood cannot grow memory without bound.
            del self._keys[next(iter(self._keys))]


def login_keys(client_id: str | None, address: str | None) -> tuple[str, ...]:
    keys = []
    if client_id:
        keys.append(f"client:{client_id}")
    if address:
        keys.append(f"address:{address}")
    return tuple(keys)
