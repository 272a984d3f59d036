"""Provider rate limits: token buckets in Redis, shared by every worker and process.

One Lua script refills and takes atomically, on Redis's own clock (TIME), so every
process draws from one bucket and no process's clock skews it.  The arithmetic is
``operators/token_bucket.py``'s (unit-tested there; the e2e tests run this script against
it with a fixed clock).  Keys are ``nf:rl:{key}`` hashes {tokens, ts} with a TTL of the
time a bucket takes to fill, so idle buckets vanish.

``acquire(n)`` waits (sleeps) until n tokens are granted, taking them in parts as they
come (so n may exceed the burst, and a big taker is not starved by small ones);
``try_acquire(n)`` never waits: ``(granted, retry_after_s)``.  A bucket built with a
``reserve`` keeps that many tokens from ordinary takes: only ``critical=True`` takes use
them, so critical sends do not queue behind bulk ones on a busy bucket.  ``AsyncTokenBucket`` is the
same over ``redis.asyncio`` for the gateway.  While Redis is unreachable a bucket falls
back to a local bucket of the same rate in this process (each process then keeps the rate
on its own, so the sum can exceed it; a provider's 429 is retried) and logs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import redis
import redis.asyncio as aredis
from prometheus_client import Counter

from notiflow.config import Settings
from operators.token_bucket import (
    EPS,
    LocalBucket,
    Take,
    bite,
    bulk_reserve,
    check_limits,
    idle_ttl_ms,
)
from schemas.request import is_critical

log = logging.getLogger(__name__)

KEY_PREFIX = "nf:rl:"

# KEYS[1] the bucket.  ARGV: rate/s, burst, want, min_take, ttl_ms, reserve[, now_us: tests].
# Returns {granted, wait_s, now_us} as strings (Lua numbers come back truncated to integers).
# Mirrors operators.token_bucket.take; keep the two in step.
TAKE_LUA = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local want, min_take = tonumber(ARGV[3]), tonumber(ARGV[4])
local reserve = tonumber(ARGV[6])
local EPS = 1e-9
local now
if ARGV[7] then
  now = tonumber(ARGV[7])
else
  redis.replicate_commands()
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(s[1]), tonumber(s[2])
if tokens == nil or ts == nil then
  tokens, ts = burst, now
elseif now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1e6)
  ts = now
else
  tokens = math.min(burst, tokens)
end
local got, wait = 0, 0
local free = tokens - reserve
if want > 0 then
  if free + EPS < min_take then
    wait = (min_take - free) / rate
  else
    if free + EPS >= want then
      got = want
    else
      got = math.max(min_take, math.floor(free + EPS))
    end
    tokens = math.max(0, tokens - got)
  end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'ts', string.format('%.0f', ts))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {string.format('%.17g', got), string.format('%.17g', wait), string.format('%.0f', now)}
"""


def _now_us() -> int:
    return time.time_ns() // 1000


class _BucketBase:
    """What the sync and async buckets share: limits, arguments, the Redis-down fallback."""

    def __init__(self, key: str, rate_per_s: float, burst: float | None,
                 poll_s: float, reserve: float) -> None:
        burst = rate_per_s if burst is None else burst
        check_limits(rate_per_s, burst)
        if not 0 <= reserve <= burst - 1:
            raise ValueError(f"reserve must leave ordinary takers at least 1 of the "
                             f"{burst:g} tokens, got {reserve!r}")
        self.reserve = float(reserve)
        self.key = KEY_PREFIX + key
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.poll_s = poll_s
        self._ttl_ms = idle_ttl_ms(self.rate_per_s, self.burst)
        self._local = LocalBucket(self.rate_per_s, self.burst)
        self.redis_unavailable = 0  # takes served by the local fallback
        self.last_now_us = 0  # the bucket's clock at the last take (Redis TIME): for benches

    def _keep(self, critical: bool) -> float:
        return 0.0 if critical else self.reserve

    def _args(self, want: float, min_take: float, keep: float) -> list[str]:
        if min_take + keep > self.burst + EPS:
            raise ValueError(f"cannot take {min_take:g} tokens at once from {self.key}: "
                             f"its burst is {self.burst:g}, {keep:g} kept for critical "
                             f"sends (use acquire(), which takes parts)")
        return [repr(self.rate_per_s), repr(self.burst), repr(float(want)),
                repr(float(min_take)), str(self._ttl_ms), repr(keep)]

    def _fallback(self, e: Exception, want: float, min_take: float,
                  keep: float) -> tuple[float, float]:
        if not self.redis_unavailable:
            log.warning("rate limit %s: Redis unavailable (%s), using a local bucket",
                        self.key, e)
        self.redis_unavailable += 1
        self.last_now_us = _now_us()
        t: Take = self._local.take(self.last_now_us, want, min_take, keep)
        return t.granted, t.wait_s

    def _recovered(self) -> None:
        if self.redis_unavailable:
            log.warning("rate limit %s: Redis back after %d local takes", self.key,
                        self.redis_unavailable)
            self.redis_unavailable = 0

    def _bite(self, remaining: float, keep: float) -> float:
        return bite(remaining, self.rate_per_s, self.burst, self.poll_s, keep)


class TokenBucket(_BucketBase):
    """A bucket of ``burst`` tokens (default: one second's worth) refilled at
    ``rate_per_s``, stored at ``nf:rl:{key}`` and shared by everyone using that key
    (with the same rate and burst)."""

    def __init__(self, client: redis.Redis, key: str, rate_per_s: float,
                 burst: float | None = None, *, reserve: float = 0.0, poll_s: float = 0.01,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(key, rate_per_s, burst, poll_s, reserve)
        self._script = client.register_script(TAKE_LUA)
        self._sleep = sleep
        self._clock = clock  # for max_wait_s deadlines (the bucket itself runs on Redis TIME)

    def take(self, want: float, min_take: float, critical: bool = False) -> tuple[float, float]:
        """One atomic take: (granted, wait_s).  Raises ValueError if min_take > burst."""
        keep = self._keep(critical)
        args = self._args(want, min_take, keep)
        try:
            got, wait, now = self._script(keys=[self.key], args=args)
        except redis.RedisError as e:
            return self._fallback(e, want, min_take, keep)
        self._recovered()
        self.last_now_us = int(now)
        return float(got), float(wait)

    def try_acquire(self, n: float = 1, critical: bool = False) -> tuple[bool, float]:
        """All n tokens now, or none: (granted, seconds until they would be there)."""
        got, wait = self.take(n, n, critical)
        return got > 0 or n <= 0, wait

    def grants(self, n: float, max_wait_s: float | None = None,
               critical: bool = False) -> Iterator[float]:
        """Yield parts of n as they are granted, sleeping between; stop early (the rest not
        granted) once ``max_wait_s`` has gone by.  Send each part as it comes: the
        provider then sees the rate, not bursts of a whole batch."""
        remaining = float(n)
        deadline = None if max_wait_s is None else self._clock() + max_wait_s
        keep = self._keep(critical)
        while remaining > EPS:
            got, wait = self.take(remaining, self._bite(remaining, keep), critical)
            if got > 0:
                remaining -= got
                yield got
                continue
            if deadline is not None:
                left = deadline - self._clock()
                if left <= 0:
                    return
                wait = min(wait, left)
            self._sleep(wait)

    def acquire(self, n: float = 1, critical: bool = False) -> float:
        """Wait until n tokens are granted (in parts when n > burst); seconds waited."""
        t0 = self._clock()
        for _ in self.grants(n, critical=critical):
            pass
        return self._clock() - t0


class AsyncTokenBucket(_BucketBase):
    """``TokenBucket`` over ``redis.asyncio`` (same script, same keys): for the gateway."""

    def __init__(self, client: aredis.Redis, key: str, rate_per_s: float,
                 burst: float | None = None, *, reserve: float = 0.0,
                 poll_s: float = 0.01) -> None:
        super().__init__(key, rate_per_s, burst, poll_s, reserve)
        self._script = client.register_script(TAKE_LUA)

    async def take(self, want: float, min_take: float,
                   critical: bool = False) -> tuple[float, float]:
        keep = self._keep(critical)
        args = self._args(want, min_take, keep)
        try:
            got, wait, now = await self._script(keys=[self.key], args=args)
        except redis.RedisError as e:
            return self._fallback(e, want, min_take, keep)
        self._recovered()
        self.last_now_us = int(now)
        return float(got), float(wait)

    async def try_acquire(self, n: float = 1, critical: bool = False) -> tuple[bool, float]:
        got, wait = await self.take(n, n, critical)
        return got > 0 or n <= 0, wait

    async def grants(self, n: float, max_wait_s: float | None = None,
                     critical: bool = False) -> AsyncIterator[float]:
        remaining = float(n)
        deadline = None if max_wait_s is None else time.monotonic() + max_wait_s
        keep = self._keep(critical)
        while remaining > EPS:
            got, wait = await self.take(remaining, self._bite(remaining, keep), critical)
            if got > 0:
                remaining -= got
                yield got
                continue
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait = min(wait, left)
            await asyncio.sleep(wait)

    async def acquire(self, n: float = 1, critical: bool = False) -> float:
        t0 = time.monotonic()
        async for _ in self.grants(n, critical=critical):
            pass
        return time.monotonic() - t0


def grants_all(buckets: Sequence[TokenBucket], n: int, max_wait_s: float | None = None,
               critical: bool = False,
               clock: Callable[[], float] = time.monotonic) -> Iterator[int]:
    """Whole parts of n granted by every bucket (an SMS needs its provider's token and its
    sender number's): parts come from the first bucket, the others then wait for the same
    count.  Put the tightest bucket first.

    Every bucket waits within the one ``max_wait_s`` deadline: a later bucket that does not
    grant a whole part in time (another process drains it) ends the grants there, so the
    caller defers the rest instead of the sink blocking without limit.  The first bucket's
    tokens for the part not granted are spent (a bucket takes no refunds)."""
    if not buckets:
        if n > 0:
            yield n
        return
    deadline = None if max_wait_s is None else clock() + max_wait_s
    first, rest = buckets[0], buckets[1:]
    for part in first.grants(n, max_wait_s, critical):
        ok = round(part)
        for b in rest:
            left = None if deadline is None else max(0.0, deadline - clock())
            ok = round(sum(b.grants(ok, left, critical)))
            if not ok:
                break
        if ok:
            yield ok
        if ok < round(part):
            return


# --- the sinks' side: one bucket per provider, one per SMS sender number ----------------

PROVIDERS = ("apns", "fcm", "sendgrid", "ses", "mailgun", "twilio", "vonage")
SMS_PROVIDERS = ("twilio", "vonage")
DEFERRED = "rate limit"  # reason prefix of sends deferred for want of tokens

WAITED = Counter("notiflow_rate_limit_wait_seconds", "time sinks slept for provider tokens",
                 ["provider"])
DEFERRED_SENDS = Counter("notiflow_rate_limit_deferred",
                         "sends put off to notify.retry for want of tokens", ["provider"])


def provider_key(provider: str) -> str:
    return f"provider:{provider}"


def number_key(provider: str, number: str) -> str:
    return f"sms-number:{provider}:{number}"


class ProviderLimits:
    """The buckets a sink partition draws from, built from Settings (``rate_*``).

    ``send(provider, tasks, send_fn)`` sends tasks in the parts the buckets grant, so
    the provider sees the configured rate; what gets no tokens within
    ``rate_max_wait_s`` comes back deferred (``retry``, due when tokens will be there).
    Critical tasks go first and may use the ``rate_critical_reserve`` share of each bucket
    that bulk sends leave alone."""

    def __init__(self, cfg: Settings, client: redis.Redis | None = None, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._sleep = sleep
        self._clock = clock
        self._r = client or redis.Redis.from_url(cfg.redis_url, socket_timeout=2,
                                                 socket_connect_timeout=2)
        self._owned = client is None
        self._buckets: dict[str, list[TokenBucket]] = {}

    def _bucket(self, key: str, rate: float) -> TokenBucket | None:
        if rate <= 0:
            return None
        burst = max(1.0, rate * self._cfg.rate_burst_s)
        return TokenBucket(self._r, key, rate, burst,
                           reserve=bulk_reserve(burst, self._cfg.rate_critical_reserve),
                           sleep=self._sleep, clock=self._clock)

    def buckets_for(self, provider: str) -> list[TokenBucket]:
        """Tightest first: the sender number's (SMS), then the provider's."""
        if provider not in self._buckets:
            bs: list[TokenBucket | None] = []
            if provider in SMS_PROVIDERS:
                num = self._cfg.sms_from
                rate = self._cfg.rate_sms_numbers.get(num, self._cfg.rate_sms_number_per_s)
                bs.append(self._bucket(number_key(provider, num), rate))
            bs.append(self._bucket(provider_key(provider),
                                   getattr(self._cfg, f"rate_{provider}_per_s", 0.0)))
            self._buckets[provider] = sorted((b for b in bs if b is not None),
                                             key=lambda b: b.rate_per_s)
        return self._buckets[provider]

    def send(self, provider: str, tasks: list, send_fn: Callable[[list], list]
             ) -> tuple[list, list]:
        """(results of what was sent, sends deferred for want of tokens)."""
        buckets = self.buckets_for(provider)
        if not buckets or not tasks:
            return (send_fn(tasks) if tasks else []), []
        crit = [t for t in tasks if is_critical(t.priority)]
        bulk = [t for t in tasks if not is_critical(t.priority)] if crit else tasks
        out: list = []
        deferred: list = []
        for group, critical in ((crit, True), (bulk, False)):
            if group:
                sent, later = self._send_group(provider, buckets, group, send_fn, critical)
                out += sent
                deferred += later
        return out, deferred

    def _send_group(self, provider: str, buckets: list[TokenBucket], tasks: list,
                    send_fn: Callable[[list], list], critical: bool) -> tuple[list, list]:
        from sinks import results as R

        out: list = []
        i = 0
        t0 = time.monotonic()
        sending = 0.0
        for part in grants_all(buckets, len(tasks), self._cfg.rate_max_wait_s, critical,
                               self._clock):
            s0 = time.monotonic()
            out += send_fn(tasks[i:i + part])
            sending += time.monotonic() - s0
            i += part
        WAITED.labels(provider).inc(max(0.0, time.monotonic() - t0 - sending))
        rest = tasks[i:]
        if not rest:
            return out, []
        DEFERRED_SENDS.labels(provider).inc(len(rest))
        after = len(rest) / min(b.rate_per_s for b in buckets)
        log.info("%s: %d sends deferred, no tokens within %.1f s", provider, len(rest),
                 self._cfg.rate_max_wait_s)
        why = f"{DEFERRED} {provider}: no tokens within {self._cfg.rate_max_wait_s:g} s"
        return out, [R.retry(t, why, after) for t in rest]

    def close(self) -> None:
        if self._owned:
            self._r.close()
