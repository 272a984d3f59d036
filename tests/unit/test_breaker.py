from operators.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


def make():
    changes = []
    b = CircuitBreaker("sendgrid", failure_threshold=5, open_s=30,
                       on_change=lambda old, new, p: changes.append((old, new, p)))
    return b, changes


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


def test_breaker_half_open_lets_one_probe_and_success_closes():
    b, changes = make()
    for t in range(5):
        b.record_failure(t)
    assert not b.allow(29_000)
    assert b.allow(30_005) and b.state == HALF_OPEN
    assert not b.allow(30_006)  # only one probe
    b.record_success(30_010)
    assert b.state == CLOSED and b.allow(30_011)
    assert [c[1] for c in changes] == [OPEN, HALF_OPEN, CLOSED]


def test_breaker_failed_probe_opens_again_for_open_s():
    b, _ = make()
    for t in range(5):
        b.record_failure(t)
    assert b.allow(31_000)
    b.record_failure(31_001)
    assert b.state == OPEN and not b.allow(60_000) and b.allow(61_002)
