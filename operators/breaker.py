"""A circuit breaker per provider: stop hammering a provider that keeps failing.

closed -> (``failure_threshold`` consecutive failures) -> open for ``open_s`` -> half_open:
exactly one probe goes through; its success closes the breaker, its failure opens it
again.  Callers record only retryable failures (429, 5xx, timeouts): a bad address says
nothing about the provider's health.  The clock is passed in (milliseconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class CircuitBreaker:
    provider: str
    failure_threshold: int = 5
    open_s: float = 30.0
    on_change: Callable[[str, str, str], None] | None = None  # (old, new, provider)
    state: str = field(default=CLOSED, init=False)
    failures: int = field(default=0, init=False)
    opened_ms: int = field(default=0, init=False)
    _probing: bool = field(default=False, init=False)

    def _set(self, new: str) -> None:
        old, self.state = self.state, new
        if old != new and self.on_change is not None:
            self.on_change(old, new, self.provider)

    def allow(self, now_ms: int) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if now_ms - self.opened_ms < self.open_s * 1000:
                return False
            self._set(HALF_OPEN)
            self._probing = False
        if self._probing:  # half-open: one probe at a time
            return False
        self._probing = True
        return True

    def record_success(self, now_ms: int) -> None:
        self.failures = 0
        self._probing = False
        if self.state != CLOSED:
            self._set(CLOSED)

    def record_failure(self, now_ms: int) -> None:
        self._probing = False
        if self.state == HALF_OPEN:
            self.opened_ms = now_ms
            self._set(OPEN)
            return
        self.failures += 1
        if self.state == CLOSED and self.failures >= self.failure_threshold:
            self.opened_ms = now_ms
            self._set(OPEN)
