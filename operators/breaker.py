"""A circuit breaker per provider: stop hammering a provider that keeps failing.

closed -> (``failure_threshold`` consecutive failures) -> open for ``open_s`` -> half_open:
exactly one probe goes through; its success closes the breaker, its failure opens it
again for ``open_s``.  Callers record only retryable failures (429, 5xx, timeouts): a bad
address or a 400 says nothing about the provider's health, so record those as neither.
The clock is passed in (milliseconds); ``on_change(old, new, provider)`` lets the caller
log and set a metric without this module doing I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

State = Literal["closed", "open", "half_open"]
CLOSED: State = "closed"
OPEN: State = "open"
HALF_OPEN: State = "half_open"


@dataclass
class CircuitBreaker:
    """One provider's breaker.

    Args:
        provider: the provider name, passed to ``on_change``.
        failure_threshold: consecutive retryable failures that open the breaker.
        open_s: how long the breaker stays open before one probe is let through.
        on_change: called with (old, new, provider) on every state change.
    """

    provider: str
    failure_threshold: int = 5
    open_s: float = 30.0
    on_change: Callable[[str, str, str], None] | None = None
    failures: int = field(default=0, init=False)
    opened_ms: int = field(default=0, init=False)
    _state: State = field(default=CLOSED, init=False)
    _probe_ms: int | None = field(default=None, init=False)  # when the open probe started

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.open_s < 0:
            raise ValueError(f"bad breaker settings for {self.provider}")

    @property
    def state(self) -> State:
        return self._state

    def _set(self, new: State) -> None:
        old, self._state = self._state, new
        if old != new and self.on_change is not None:
            self.on_change(old, new, self.provider)

    def _open(self, now_ms: int) -> None:
        self.opened_ms = now_ms
        self._probe_ms = None
        self._set(OPEN)

    def allow(self, now_ms: int) -> bool:
        """May a request go to this provider now?  A True in half_open claims the probe."""
        if self._state == CLOSED:
            return True
        if self._state == OPEN:
            if now_ms - self.opened_ms < self.open_s * 1000:
                return False
            self._set(HALF_OPEN)
        if self._probe_ms is not None:
            # one probe at a time; a probe whose outcome never came (the caller crashed
            # mid-send) counts as failed after open_s, or the breaker would stay stuck
            if now_ms - self._probe_ms < self.open_s * 1000:
                return False
            self._open(now_ms)
            return False
        self._probe_ms = now_ms
        return True

    def record_success(self, now_ms: int) -> None:
        """A request got through: reset the streak and close."""
        self.failures = 0
        self._probe_ms = None
        self._set(CLOSED)

    def record_failure(self, now_ms: int) -> None:
        """A retryable failure (429/5xx/timeout): count it; a failed probe reopens."""
        if self._state == HALF_OPEN:
            self._open(now_ms)
            return
        self.failures += 1
        if self._state == CLOSED and self.failures >= self.failure_threshold:
            self._open(now_ms)
