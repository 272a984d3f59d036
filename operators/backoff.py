"""Exponential backoff with full jitter, capped, with a retry deadline.

Full jitter (a uniform draw between 0 and the exponential step) spreads the retries of a
whole failed batch instead of sending them back in one wave.  A provider's Retry-After
is a floor: never retry sooner than it asks.  After ``deadline_s`` from the first try the
caller gives up and dead-letters.  The RNG and the clock (ms) are passed in, so tests
are exact and this module never reads the time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

_MAX_EXP = 64  # 2**64 s is far beyond any cap; keeps huge attempt numbers from overflowing


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait between tries, and when to stop.

    Args:
        base_s: the first step (attempt 1).
        cap_s: the longest single step.
        deadline_s: stop retrying this long after the first attempt.
        jitter: "full" (uniform in [0, step]) or "none" (the step itself; for tests/tools).
    """

    base_s: float = 1.0
    cap_s: float = 3600.0
    deadline_s: float = 24 * 3600
    jitter: Literal["full", "none"] = "full"

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s or self.deadline_s <= 0:
            raise ValueError(f"bad backoff policy: {self!r}")
        if self.jitter not in ("full", "none"):
            raise ValueError(f"unknown jitter {self.jitter!r}")

    def step_s(self, attempt: int) -> float:
        """The upper bound of the wait after failed ``attempt``: min(cap, base * 2**(attempt-1))."""
        exp = min(max(0, attempt - 1), _MAX_EXP)
        return min(self.cap_s, self.base_s * 2.0**exp)

    def delay_s(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before the try after failed ``attempt`` (1 = the first send).

        Args:
            attempt: the attempt that just failed, counted from 1.
            rng: the random source for the jitter draw.
            retry_after: the provider's Retry-After in seconds, if any; a floor.
        """
        step = self.step_s(attempt)
        d = rng.uniform(0, step) if self.jitter == "full" else step
        return max(d, retry_after) if retry_after is not None else d

    def next_due_ms(self, first_attempt_ms: int, attempt: int, now_ms: int,
                    rng: random.Random, retry_after: float | None = None) -> int | None:
        """When to try again (epoch ms), or None when that is past the deadline: dead-letter.

        Args:
            first_attempt_ms: when the task was first tried; the deadline counts from here.
            attempt: the attempt that just failed, counted from 1.
            now_ms: the current time, from the caller's clock.
            rng: the random source for the jitter draw.
            retry_after: the provider's Retry-After in seconds, if any; a floor.
        """
        due = now_ms + math.ceil(self.delay_s(attempt, rng, retry_after) * 1000)  # never early
        deadline = first_attempt_ms + int(self.deadline_s * 1000)
        return None if due > deadline else due
