"""Dedup's window stays at rate x TTL at any insert rate, and a backlog drains."""

from operators.dedup import MIN_SWEEP, Dedup


def feed(d: Dedup, rate_per_s: int, seconds: int, start_ms: int = 0) -> list[int]:
    """``rate_per_s`` new keys a second, sweeping as the partition does (once a second);
    the window's size at the end of each simulated second."""
    sizes, swept, i = [], start_ms, 0
    per_tick = rate_per_s // 100
    for tick in range(seconds * 100):  # 10 ms ticks
        now = start_ms + tick * 10
        for _ in range(per_tick):
            d.seen(f"k{i}", now)
            i += 1
        if now - swept > 1000:
            d.sweep(now)
            swept = now
        if tick % 100 == 99:
            sizes.append(len(d))
    return sizes


def test_dedup_window_levels_off_above_the_old_fixed_cap():
    rate, ttl_s = 3 * MIN_SWEEP, 3  # three times what a cap of MIN_SWEEP a second evicts
    d = Dedup(ttl_ms=ttl_s * 1000)
    sizes = feed(d, rate, 30)
    bound = rate * (ttl_s + 1.1)  # the TTL plus at most one sweep interval not yet swept
    assert max(sizes[ttl_s + 2:]) <= bound, sizes
    assert max(sizes[-10:]) - min(sizes[-10:]) <= rate * 1.1  # level, not growing


def test_dedup_restored_backlog_drains_in_a_few_sweeps():
    d = Dedup(ttl_ms=1000, expiry={h: 1000 for h in range(20 * MIN_SWEEP)})  # all expired
    for k in range(5):
        d.sweep(10_000 + k * 1001)
    assert len(d) < 20 * MIN_SWEEP * 0.7
    for k in range(5, 60):
        d.sweep(10_000 + k * 1001)
    assert len(d) == 0


def test_dedup_sweep_keeps_what_has_not_expired():
    d = Dedup(ttl_ms=1000)
    for i in range(100):
        d.seen(f"a{i}", 0)
    for i in range(100):
        d.seen(f"b{i}", 600)
    assert d.sweep(1000) == 100 and len(d) == 100
    assert d.seen("b1", 1500) and not d.seen("a1", 1500)
