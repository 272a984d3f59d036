"""Token-bucket arithmetic, engine- and Redis-free.

The shared buckets live in Redis (``sinks/rate_limit.py`` runs this same arithmetic as a
Lua script, so every worker and process draws from one bucket on one clock).  Keeping it
here as plain Python lets it be unit-tested with a fixed clock, lets the tests check the
Lua against it step by step, and gives the sinks a local fallback bucket while Redis is
down.

A bucket holds at most ``burst`` tokens and gains ``rate`` tokens a second.  A take asks
for ``want`` tokens and accepts no fewer than ``min_take``: ``min_take == want`` is
all-or-nothing (``try_acquire``); a smaller ``min_take`` grants whole tokens in parts
(``acquire`` of more than the burst).  A take with ``reserve`` leaves that many tokens in
the bucket: bulk sends keep a few back, so a critical send (taking with no reserve) finds
tokens at once however busy the bucket is, while the total rate stays the bucket's.
Times are integer microseconds, like Redis TIME.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# float slack: 0.1 + 0.2 tokens must still pay for 0.3
EPS = 1e-9


@dataclass(frozen=True, slots=True)
class BucketState:
    tokens: float
    ts_us: int  # when ``tokens`` was last brought up to date


@dataclass(frozen=True, slots=True)
class Take:
    state: BucketState
    granted: float  # 0 when refused
    wait_s: float  # when refused: how long until ``min_take`` tokens are there (0 if granted)


def check_limits(rate_per_s: float, burst: float) -> None:
    """Bad configuration -> a clear error, at construction rather than mid-send."""
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be a positive number, got {rate_per_s!r}")
    if not (burst >= 1 and math.isfinite(burst)):
        raise ValueError(f"burst must be at least 1 token, got {burst!r}")


def refill(state: BucketState | None, now_us: int, rate_per_s: float,
           burst: float) -> BucketState:
    """The bucket brought up to ``now_us``; a missing (expired) bucket is full.  A clock
    that went back (a Redis failover) adds nothing and keeps the later timestamp."""
    if state is None:
        return BucketState(float(burst), now_us)
    if now_us <= state.ts_us:
        return BucketState(min(float(burst), state.tokens), state.ts_us)
    gained = (now_us - state.ts_us) * rate_per_s / 1e6
    return BucketState(min(float(burst), state.tokens + gained), now_us)


def take(state: BucketState | None, now_us: int, rate_per_s: float, burst: float,
         want: float, min_take: float | None = None, reserve: float = 0.0) -> Take:
    """Refill, then grant ``want`` tokens, or at least ``min_take`` whole-token parts of
    it, leaving ``reserve`` tokens in the bucket."""
    if min_take is None:
        min_take = want
    if want <= 0:
        return Take(refill(state, now_us, rate_per_s, burst), 0.0, 0.0)
    if min_take + reserve > burst + EPS:
        raise ValueError(f"cannot take {min_take} tokens at once (keeping {reserve}) "
                         f"from a bucket of {burst}")
    s = refill(state, now_us, rate_per_s, burst)
    free = s.tokens - reserve
    if free + EPS < min_take:
        return Take(s, 0.0, (min_take - free) / rate_per_s)
    if free + EPS >= want:
        got = want
    else:  # a part: whole tokens, never fewer than min_take
        got = max(min_take, float(math.floor(free + EPS)))
    return Take(BucketState(max(0.0, s.tokens - got), s.ts_us), got, 0.0)


def idle_ttl_ms(rate_per_s: float, burst: float) -> int:
    """After this long untouched a bucket is full again, i.e. the same as absent: the
    Redis key may expire then, so idle buckets (an old sender number) vanish."""
    return math.ceil(burst / rate_per_s * 1000) + 1000


def bite(remaining: float, rate_per_s: float, burst: float, poll_s: float,
         reserve: float = 0.0) -> float:
    """The least part ``acquire`` waits for: about ``poll_s`` worth of whole tokens (so a
    waiter asks Redis at most ~1/poll_s times a second), at least one, at most what the
    bucket can hold beside the reserve."""
    return min(remaining, float(math.floor(burst - reserve)),
               max(1.0, float(math.floor(rate_per_s * poll_s))))


def bulk_reserve(burst: float, fraction: float) -> float:
    """Whole tokens bulk takers leave for critical ones: ``fraction`` of the burst, and
    never so many that a bulk taker could not get one token (a 1-token bucket keeps none)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"reserve fraction must be in [0, 1), got {fraction!r}")
    return float(min(math.floor(burst * fraction), math.floor(burst) - 1))


class LocalBucket:
    """One process's bucket on its own clock: the fallback while Redis is unreachable."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        check_limits(rate_per_s, burst)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._state: BucketState | None = None

    def take(self, now_us: int, want: float, min_take: float | None = None,
             reserve: float = 0.0) -> Take:
        t = take(self._state, now_us, self.rate_per_s, self.burst, want, min_take, reserve)
        self._state = t.state
        return t
