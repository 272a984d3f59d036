import random

import pytest

from operators.backoff import BackoffPolicy


@pytest.mark.parametrize("attempt", [1, 2, 5, 10, 30])
def test_backoff_full_jitter_stays_within_capped_step(attempt):
    p = BackoffPolicy(base_s=1.0, cap_s=60.0)
    rng = random.Random(attempt)
    step = min(60.0, 2 ** (attempt - 1))
    draws = [p.delay_s(attempt, rng) for _ in range(200)]
    assert all(0 <= d <= step for d in draws)
    assert max(draws) > step * 0.8  # full jitter uses the whole range


def test_backoff_retry_after_is_a_floor():
    p = BackoffPolicy(base_s=1.0, cap_s=60.0)
    assert all(p.delay_s(1, random.Random(i), retry_after=42.0) >= 42.0 for i in range(50))
