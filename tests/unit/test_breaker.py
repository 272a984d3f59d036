"""Circuit breaker with a fixed clock (ms)."""

import pytest

from operators.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


def make(**kw):
    changes = []
    b = CircuitBreaker("sendgrid", on_change=lambda old, new, p: changes.append((old, new, p)),
                       **kw)
    return b, changes


def opened(**kw):
    b, changes = make(**kw)
    for t in range(b.failure_threshold):
        b.record_failure(t)
    return b, changes


def test_breaker_defaults_five_failures_thirty_seconds():
    b, _ = make()
    assert (b.failure_threshold, b.open_s, b.state) == (5, 30.0, CLOSED)


def test_breaker_opens_after_five_consecutive_failures_only():
    b, changes = make()
    for t in range(4):
        b.record_failure(t)
    b.record_success(4)  # the streak is broken
    for t in range(5, 9):
        b.record_failure(t)
    assert b.state == CLOSED and b.allow(9)
    b.record_failure(10)
    assert b.state == OPEN and not b.allow(11)
    assert changes == [(CLOSED, OPEN, "sendgrid")]


def test_breaker_threshold_is_configurable():
    b, _ = make(failure_threshold=2, open_s=1)
    b.record_failure(0)
    assert b.state == CLOSED
    b.record_failure(1)
    assert b.state == OPEN and not b.allow(500) and b.allow(1_001)


def test_breaker_stays_open_for_open_s():
    b, _ = opened()
    assert not any(b.allow(t) for t in range(4, 30_004, 1000))
    assert b.state == OPEN


def test_breaker_half_open_lets_one_probe_and_success_closes():
    b, changes = opened()
    assert not b.allow(29_000)
    assert b.allow(30_005) and b.state == HALF_OPEN
    assert not b.allow(30_006) and not b.allow(40_000)  # only one probe
    b.record_success(40_010)
    assert b.state == CLOSED and b.allow(40_011) and b.allow(40_012)
    assert [c[1] for c in changes] == [OPEN, HALF_OPEN, CLOSED]


def test_breaker_failed_probe_opens_again_for_open_s():
    b, changes = opened()
    assert b.allow(31_000)
    b.record_failure(31_001)
    assert b.state == OPEN and not b.allow(60_000) and b.allow(61_002)
    assert [c[1] for c in changes] == [OPEN, HALF_OPEN, OPEN, HALF_OPEN]


def test_breaker_lost_probe_counts_as_failed_after_open_s():
    b, _ = opened()
    assert b.allow(30_004)  # the probe's caller never reports back
    assert not b.allow(60_003)
    assert not b.allow(60_004) and b.state == OPEN  # lost probe: reopened
    assert b.allow(90_004) and b.state == HALF_OPEN


def test_breaker_success_after_reclose_needs_a_fresh_streak():
    b, _ = opened()
    b.allow(30_004)
    b.record_success(30_005)
    for t in range(4):
        b.record_failure(40_000 + t)
    assert b.state == CLOSED


def test_breaker_state_is_read_only():
    b, _ = make()
    with pytest.raises(AttributeError):
        b.state = OPEN


def test_breaker_rejects_bad_settings():
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)
