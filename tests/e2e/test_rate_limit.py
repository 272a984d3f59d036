"""Provider rate limits over the real Redis, sinks and sandbox.

The Lua bucket runs the arithmetic of operators/token_bucket.py (checked step by step on
a fixed clock); several processes share one bucket and never get more than
rate * window + burst; sinks wait for tokens (or defer to notify.retry) instead of failing.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import msgspec
import pytest
import redis
import redis.asyncio as aredis

from bench.rate_limit import contend
from loader.client import local_sql
from notiflow.config import Settings
from operators.token_bucket import idle_ttl_ms, take
from sandbox.client import SandboxControl
from schemas.task import DeliveryTask
from sinks import results as R
from sinks.bytewax_sinks import DeliverySink
from sinks.failover import FailoverSender
from sinks.rate_limit import (
    KEY_PREFIX,
    TAKE_LUA,
    AsyncTokenBucket,
    TokenBucket,
    number_key,
    provider_key,
)
from stack.services import free_port


@pytest.fixture
def r(stack):
    c = redis.Redis.from_url(stack.redis_url)
    yield c
    c.close()


def key() -> str:
    return f"test:{uuid.uuid4().hex[:8]}"


def task(run: str, i: int, provider: str, address: str) -> DeliveryTask:
    channel = {"apns": "push", "twilio": "sms", "vonage": "sms"}[provider]
    return DeliveryTask(notification_id=f"{run}-{i}", user_id=f"{run}-u{i}", type="test.rate",
                        priority="normal", channel=channel, provider=provider,
                        target_id="phone", address=address, title="T", body="B",
                        template=None, data=None, collapse_key=None,
                        created_ms=int(time.time() * 1000))


def test_lua_script_runs_the_python_arithmetic(r):
    """Same inputs on a fixed clock (the script's test-only now argument) -> same state."""
    script = r.register_script(TAKE_LUA)
    k, rng = KEY_PREFIX + key(), random.Random(3)
    rate, burst = 13.3, 10.0
    state, now = None, 1_700_000_000 * 1_000_000
    for _ in range(300):
        now += rng.choice([0, rng.randrange(0, 400_000), -5_000])  # a clock step back too
        want = rng.choice([0, 1, 2, 3.5, 7, 8])
        least = rng.choice([want, min(want, 1)])
        keep = rng.choice([0.0, 0.0, 2.0])
        py = take(state, now, rate, burst, want, least, keep)
        state = py.state
        got, wait, at = script(keys=[k], args=[repr(rate), repr(burst), repr(float(want)),
                                               repr(float(least)), "60000", repr(keep),
                                               str(now)])
        h = r.hgetall(k)
        assert float(got) == pytest.approx(py.granted, abs=1e-9)
        assert float(wait) == pytest.approx(py.wait_s, abs=1e-9)
        assert float(h[b"tokens"]) == pytest.approx(py.state.tokens, abs=1e-9)
        assert int(h[b"ts"]) == py.state.ts_us and int(at) == now
    r.delete(k)


def test_processes_sharing_a_bucket_never_get_more_than_rate_window_plus_burst(stack):
    rate, burst = 200.0, 20.0
    f, grants = contend(stack.redis_url, processes=3, rate=rate, seconds=3, burst=burst)
    # timed on the bucket's clock (Redis TIME): the bound is exact, over every window
    assert f.worst_excess <= 1e-6, f
    assert f.granted <= rate * (grants[-1][0] - grants[0][0]) / 1e6 + burst + 1e-6
    assert f.achieved > rate * 0.5, f"the three takers barely drew from the bucket: {f}"


def test_try_acquire_answers_at_once_with_retry_after_and_idle_buckets_expire(r):
    b = TokenBucket(r, key(), rate_per_s=10, burst=3)
    assert [b.try_acquire()[0] for _ in range(3)] == [True] * 3
    ok, after = b.try_acquire(2)
    assert not ok and 0.1 < after <= 0.2 + 1e-6  # ~2 tokens at 10/s, minus what refilled
    assert 0 < r.pttl(b.key) <= idle_ttl_ms(10, 3)
    with pytest.raises(ValueError, match="burst is 3"):
        b.try_acquire(4)


def test_critical_takes_find_the_reserve_bulk_takes_leave(r):
    b = TokenBucket(r, key(), rate_per_s=0.01, burst=10, reserve=2)  # ~no refill
    assert b.try_acquire(8) == (True, 0.0)
    ok, after = b.try_acquire(1)  # bulk: only the reserve is left
    assert not ok and after > 60
    assert b.try_acquire(2, critical=True)[0]
    assert not b.try_acquire(1, critical=True)[0]
    with pytest.raises(ValueError, match="reserve"):
        TokenBucket(r, key(), rate_per_s=1, burst=2, reserve=2)


def test_acquire_more_than_the_burst_waits_and_takes_parts(r):
    b = TokenBucket(r, key(), rate_per_s=50, burst=10)
    waited = b.acquire(35)  # 10 at once, 25 more at 50/s
    assert waited >= 0.5 * 0.9
    assert not b.try_acquire(5)[0]  # it took them: the bucket is empty


def test_async_bucket_draws_from_the_same_bucket(stack, r):
    k = key()

    async def drain() -> tuple[bool, bool]:
        c = aredis.Redis.from_url(stack.redis_url)
        try:
            ab = AsyncTokenBucket(c, k, rate_per_s=1, burst=5)
            first = (await ab.try_acquire(5))[0]
            await ab.acquire(0)
            return first, (await ab.try_acquire(1))[0]
        finally:
            await c.aclose()

    assert asyncio.run(drain()) == (True, False)
    assert not TokenBucket(r, k, rate_per_s=1, burst=5).try_acquire(1)[0]


def test_redis_down_falls_back_to_a_local_bucket_instead_of_failing():
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    b = TokenBucket(dead, key(), rate_per_s=0.01, burst=2)  # no refill during the test
    assert b.try_acquire(2) == (True, 0.0)
    ok, after = b.try_acquire(1)
    assert not ok and after > 0
    assert b.redis_unavailable == 2


@pytest.fixture
def sb(stack):
    with SandboxControl(stack.sandbox_url) as c:
        yield c


def cfg_for(stack, **limits) -> Settings:
    return Settings(kafka_brokers=stack.brokers, redis_url=stack.redis_url,
                    apns_url=stack.sandbox_url, fcm_url=stack.sandbox_url,
                    twilio_url=stack.sandbox_url, vonage_url=stack.sandbox_url,
                    stats_url=stack.stats_url, **limits)


def test_push_batch_through_the_real_sink_waits_for_tokens_instead_of_failing(stack, r, sb):
    r.delete(KEY_PREFIX + provider_key("apns"))
    cfg = cfg_for(stack, rate_apns_per_s=40, rate_burst_s=1, rate_max_wait_s=60)
    run = f"rlp{uuid.uuid4().hex[:6]}"
    tasks = [task(run, i, "apns", f"{i:064x}") for i in range(100)]
    part = DeliverySink("push", cfg).build("push-out", 0, 1)
    try:
        t0 = time.monotonic()
        part.write_batch([tasks])
        waited = time.monotonic() - t0
    finally:
        part.close()
        del part  # its Kafka producer goes with it, before the stack stops
        r.delete(KEY_PREFIX + provider_key("apns"))
    assert waited >= (100 - 40) / 40 * 0.9  # 40 at once, then 60 at 40/s
    seen = sorted(m["ts_ms"] for m in sb.messages("apns") if m["nid"].startswith(run))
    assert len(seen) == 100
    # the provider saw the rate, not one burst: after the first 40, about 40 a second
    assert (seen[-1] - seen[40]) / 1000 >= (100 - 41) / 40 * 0.9
    # every one has a 'sent' receipt (via notify.receipts and the loader), none failed
    sql = (f"SELECT outcome, count() FROM notiflow.receipts WHERE notification_id LIKE "
           f"'{run}-%' GROUP BY outcome")
    deadline, rows = time.time() + 60, []
    while time.time() < deadline:
        rows = local_sql(stack.loader_socket, sql, timeout=10).rows
        if rows and sum(n for _, n in rows) >= 100:
            break
        time.sleep(0.5)
    assert dict(rows) == {"sent": 100}


def test_sms_waits_per_sender_number_then_spills_over_and_defers_the_rest(stack, r, sb):
    number = f"+1555{random.randrange(10**7):07d}"
    keys = [KEY_PREFIX + number_key(p, number) for p in ("twilio", "vonage")]
    cfg = cfg_for(stack, sms_from=number, rate_sms_number_per_s=5, rate_burst_s=1,
                  rate_max_wait_s=0.5, sms_providers=["twilio", "vonage"])
    run = f"rls{uuid.uuid4().hex[:6]}"
    tasks = [task(run, i, "twilio", f"+1444{i:07d}") for i in range(30)]
    sender = FailoverSender(cfg, cfg.sms_providers)
    try:
        results = sender.send(tasks)
    finally:
        sender.close()
        r.delete(*keys)
    by = {}
    for res in results:
        by.setdefault(res.status, []).append(res)
    assert set(by) <= {"sent", "retry"} and len(results) == 30
    # each number: 5 at once + 5/s for at most ~0.5 s, then the next provider's number
    sent_by = {p: sum(1 for x in by["sent"] if x.task.provider == p) for p in ("twilio", "vonage")}
    assert 5 <= sent_by["twilio"] <= 9 and 5 <= sent_by["vonage"] <= 9, sent_by
    deferred = by["retry"]
    assert len(deferred) == 30 - sum(sent_by.values())
    assert all(d.reason.startswith("rate limit vonage") and d.retry_after > 0 for d in deferred)
    assert not any(b.state == "open" for b in sender.breakers.values())


def test_critical_sends_go_first_and_may_use_the_reserve(stack, r):
    from sinks.rate_limit import ProviderLimits

    r.delete(KEY_PREFIX + provider_key("apns"))
    cfg = cfg_for(stack, rate_apns_per_s=10, rate_burst_s=1, rate_critical_reserve=0.2,
                  rate_max_wait_s=0.05)
    run = f"rlc{uuid.uuid4().hex[:6]}"
    bulk = [task(run, i, "apns", f"{i:064x}") for i in range(10)]
    crit = [msgspec.structs.replace(task(run, 99, "apns", "f" * 64), priority="critical")]
    calls: list[list[str]] = []

    def send_fn(part):
        calls.append([t.priority for t in part])
        return [R.sent(t) for t in part]

    limits = ProviderLimits(cfg)
    try:
        sent, deferred = limits.send("apns", bulk + crit, send_fn)
    finally:
        limits.close()
        r.delete(KEY_PREFIX + provider_key("apns"))
    assert calls[0] == ["critical"]
    # critical took 1 of the 10 tokens; bulk leaves the reserve (2): 7 sent, 3 deferred
    assert len(sent) == 1 + 7 and len(deferred) == 3
    assert all(d.task.priority != "critical" and d.status == "retry" for d in deferred)
