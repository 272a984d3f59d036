"""Token-bucket arithmetic on a fixed clock (the same arithmetic the Redis script runs)."""

import random

import pytest

from operators.token_bucket import (
    BucketState,
    LocalBucket,
    bite,
    bulk_reserve,
    check_limits,
    idle_ttl_ms,
    refill,
    take,
)

S = 1_000_000  # microseconds in a second


def test_new_bucket_starts_full_and_grants_up_to_burst():
    t = take(None, 0, rate_per_s=10, burst=5, want=5)
    assert t.granted == 5 and t.wait_s == 0 and t.state.tokens == 0


def test_refused_take_says_how_long_until_tokens():
    t = take(BucketState(0.5, 0), 0, rate_per_s=10, burst=5, want=3)
    assert t.granted == 0
    assert t.wait_s == pytest.approx(0.25)  # 2.5 tokens at 10/s
    assert t.state.tokens == 0.5  # a refusal takes nothing


def test_refill_is_linear_and_capped_at_burst():
    assert refill(BucketState(0, 0), S // 10, 10, 5).tokens == pytest.approx(1)
    assert refill(BucketState(0, 0), 60 * S, 10, 5).tokens == 5


def test_clock_going_back_adds_nothing_and_keeps_later_timestamp():
    s = refill(BucketState(2, 10 * S), 9 * S, 10, 5)
    assert s == BucketState(2, 10 * S)


def test_all_or_nothing_by_default():
    t = take(BucketState(2.9, 0), 0, 1, 10, want=3)
    assert t.granted == 0 and t.wait_s == pytest.approx(0.1)


def test_partial_take_grants_whole_tokens_not_below_min():
    t = take(BucketState(3.7, 0), 0, 1, 10, want=8, min_take=1)
    assert t.granted == 3 and t.state.tokens == pytest.approx(0.7)
    t = take(BucketState(0.7, 0), 0, 1, 10, want=8, min_take=1)
    assert t.granted == 0 and t.wait_s == pytest.approx(0.3)


def test_float_slack_pays_for_sums_of_fractions():
    s = BucketState(0.1 + 0.2, 0)  # 0.30000000000000004 vs 0.3
    assert take(s, 0, 1, 1, want=0.3).granted == 0.3
    s = BucketState(0.7 + 0.1 + 0.1 + 0.1, 0)  # 0.9999999999999999
    assert take(s, 0, 1, 10, want=5, min_take=1).granted == 1


def test_reserve_is_left_in_the_bucket_for_takers_without_one():
    s = BucketState(5, 0)
    t = take(s, 0, 1, 10, want=5, min_take=1, reserve=2)
    assert t.granted == 3 and t.state.tokens == 2
    t = take(t.state, 0, 1, 10, want=1, reserve=2)
    assert t.granted == 0 and t.wait_s == pytest.approx(1.0)
    assert take(t.state, 0, 1, 10, want=2).granted == 2  # a critical take uses it


def test_bulk_reserve_is_whole_tokens_and_leaves_bulk_at_least_one():
    assert bulk_reserve(1000, 0.1) == 100
    assert bulk_reserve(5, 0.1) == 0
    assert bulk_reserve(1, 0.5) == 0
    assert bulk_reserve(2, 0.9) == 1
    with pytest.raises(ValueError):
        bulk_reserve(10, 1.0)


def test_zero_want_grants_nothing_and_never_waits():
    t = take(None, 0, 1, 1, want=0)
    assert t.granted == 0 and t.wait_s == 0


def test_min_take_over_burst_is_a_clear_error():
    with pytest.raises(ValueError, match="bucket of 5"):
        take(None, 0, 1, 5, want=6)
    with pytest.raises(ValueError, match="keeping 2"):
        take(None, 0, 1, 5, want=4, reserve=2)


@pytest.mark.parametrize("rate,burst", [(0, 1), (-1, 1), (float("nan"), 1), (1, 0.5),
                                        (1, float("inf"))])
def test_bad_limits_are_clear_errors(rate, burst):
    with pytest.raises(ValueError):
        check_limits(rate, burst)


def test_idle_ttl_covers_the_time_to_fill():
    assert idle_ttl_ms(10, 50) == 5_000 + 1_000
    assert idle_ttl_ms(1_000, 1) == 1 + 1_000


def test_bite_is_whole_tokens_between_one_and_burst():
    assert bite(1000, rate_per_s=1, burst=1, poll_s=0.01) == 1
    assert bite(1000, rate_per_s=10_000, burst=10_000, poll_s=0.01) == 100
    assert bite(1000, rate_per_s=10_000, burst=40, poll_s=0.01) == 40
    assert bite(3, rate_per_s=10_000, burst=10_000, poll_s=0.01) == 3
    assert bite(1000, rate_per_s=150, burst=150, poll_s=0.01) == 1
    assert bite(1000, rate_per_s=10_000, burst=40, poll_s=0.01, reserve=4) == 36


def test_granted_over_any_window_never_exceeds_rate_times_window_plus_burst():
    """Many random takers on one bucket: the bound the shared bucket promises."""
    rng = random.Random(7)
    rate, burst = 50.0, 20.0
    b = LocalBucket(rate, burst)
    now, grants = 0, []
    for _ in range(20_000):
        now += rng.randrange(0, 40_000)
        want = rng.choice([1, 1, 2, 5, 20])
        t = b.take(now, want, rng.choice([want, 1]))
        if t.granted:
            grants.append((now, t.granted))
    total = sum(g for _, g in grants)
    span_s = (grants[-1][0] - grants[0][0]) / S
    assert total <= rate * span_s + burst + 1e-6
    assert total >= rate * span_s * 0.9  # and the takers were busy enough to use it
    for i in range(0, len(grants), 97):  # windows starting at many grants
        t0 = grants[i][0]
        for w in (0.5, 2.0, 10.0):
            n = sum(g for ts, g in grants[i:] if ts <= t0 + w * S)
            assert n <= rate * w + burst + 1e-6


def test_local_bucket_acquire_loop_gets_exactly_n_in_parts_beyond_burst():
    b = LocalBucket(rate_per_s=100, burst=10)
    now, got = 0, 0.0
    while got < 35:
        t = b.take(now, 35 - got, bite(35 - got, 100, 10, 0.01))
        got += t.granted
        now += max(int(t.wait_s * S), 1) if not t.granted else 0
    assert got == 35
    assert now == pytest.approx(0.25 * S, rel=0.05)  # 10 at once, then 25 at 100/s
