"""Exponential backoff with full jitter, capped, with a retry deadline.

Full jitter (a uniform draw between 0 and the exponential step) spreads the retries of a
whole failed batch instead of sending them back in one wave.  A provider's Retry-After
is a floor: never retry sooner than it asks.  The RNG is passed in so tests are exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base_s: float = 1.0
    cap_s: float = 600.0
    deadline_s: float = 24 * 3600

    def delay_s(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Wait before the try after failed ``attempt`` (1 = the first send)."""
        step = min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1))
        d = rng.uniform(0, step)
        return max(d, retry_after) if retry_after is not None else d
