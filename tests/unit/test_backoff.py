"""Backoff policy with a seeded RNG and a fixed clock."""

import random

import pytest

from operators.backoff import BackoffPolicy

HOUR_MS = 3_600_000


@pytest.mark.parametrize("attempt", [1, 2, 5, 10, 30])
def test_backoff_full_jitter_stays_within_capped_step(attempt):
    p = BackoffPolicy(base_s=1.0, cap_s=60.0)
    rng = random.Random(attempt)
    step = min(60.0, 2 ** (attempt - 1))
    draws = [p.delay_s(attempt, rng) for _ in range(200)]
    assert all(0 <= d <= step for d in draws)
    assert max(draws) > step * 0.8  # full jitter uses the whole range
    assert min(draws) < step * 0.2


def test_backoff_defaults_match_the_brief():
    p = BackoffPolicy()
    assert (p.base_s, p.cap_s, p.deadline_s, p.jitter) == (1.0, 3600.0, 86400, "full")


def test_backoff_step_grows_monotonically_to_the_cap():
    p = BackoffPolicy(base_s=1.0, cap_s=3600.0)
    steps = [p.step_s(a) for a in range(1, 40)]
    assert steps[:4] == [1.0, 2.0, 4.0, 8.0]
    assert all(a <= b for a, b in zip(steps, steps[1:], strict=False))
    assert max(steps) == 3600.0 and steps[-1] == 3600.0


def test_backoff_huge_attempt_does_not_overflow():
    p = BackoffPolicy(cap_s=120.0)
    assert 0 <= p.delay_s(10_000, random.Random(0)) <= 120.0


def test_backoff_without_jitter_is_the_step():
    p = BackoffPolicy(base_s=2.0, cap_s=100.0, jitter="none")
    assert [p.delay_s(a, random.Random(0)) for a in (1, 2, 3, 7, 8)] == [2, 4, 8, 100, 100]


def test_backoff_same_seed_same_delays():
    p = BackoffPolicy()
    a = [p.delay_s(n, random.Random(7)) for n in range(1, 10)]
    b = [p.delay_s(n, random.Random(7)) for n in range(1, 10)]
    assert a == b


def test_backoff_retry_after_is_a_floor():
    p = BackoffPolicy(base_s=1.0, cap_s=60.0)
    assert all(p.delay_s(1, random.Random(i), retry_after=42.0) >= 42.0 for i in range(50))


def test_backoff_retry_after_beyond_cap_still_wins():
    p = BackoffPolicy(base_s=1.0, cap_s=10.0)
    assert p.delay_s(3, random.Random(1), retry_after=600.0) == 600.0


def test_backoff_retry_after_below_draw_changes_nothing():
    p = BackoffPolicy(base_s=1.0, cap_s=60.0, jitter="none")
    assert p.delay_s(5, random.Random(1), retry_after=0.5) == 16.0


def test_backoff_next_due_is_now_plus_delay():
    p = BackoffPolicy(base_s=1.0, cap_s=60.0)
    due = p.next_due_ms(0, 3, 10_000, random.Random(3))
    assert due is not None and 10_000 <= due <= 14_000


def test_backoff_next_due_never_before_retry_after():
    p = BackoffPolicy(base_s=1.0, cap_s=60.0)
    for i in range(50):
        due = p.next_due_ms(0, 1, 5_000, random.Random(i), retry_after=30.0001)
        assert due is not None and due >= 5_000 + 30_000.1


def test_backoff_next_due_past_deadline_is_none():
    p = BackoffPolicy(base_s=1.0, cap_s=3600.0, deadline_s=24 * 3600, jitter="none")
    first = 1_000
    # attempt 13 -> step 4096 s, capped to 3600 s; 23 h in there is still room
    assert p.next_due_ms(first, 13, first + 23 * HOUR_MS, random.Random(0)) == first + 24 * HOUR_MS
    # one ms later the next try would land after the deadline: dead-letter
    assert p.next_due_ms(first, 13, first + 23 * HOUR_MS + 1, random.Random(0)) is None


def test_backoff_next_due_retry_after_past_deadline_is_none():
    p = BackoffPolicy(deadline_s=60.0)
    assert p.next_due_ms(0, 1, 30_000, random.Random(0), retry_after=31.0) is None


@pytest.mark.parametrize("kw", [dict(base_s=0), dict(base_s=10, cap_s=5), dict(deadline_s=0),
                                dict(jitter="equal")])
def test_backoff_rejects_bad_policy(kw):
    with pytest.raises(ValueError):
        BackoffPolicy(**kw)
