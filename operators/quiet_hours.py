"""Quiet hours in the user's own time zone: is ``now`` inside them, and when do they end?

A quiet window is ``(start, end, tz)`` with local wall-clock times "HH:MM" and an IANA
zone.  ``start < end`` is a same-day window [start, end); ``start > end`` spans midnight
([start, 24:00) and [00:00, end)); ``start == end`` is an empty window (no quiet hours:
"always quiet" would hold a user's notifications forever).

Quiet hours follow the wall clock, which is what a person setting "22:00-07:00" means:

- Inside or not is decided by the local time the clock shows at ``now``.
- The end is the first instant after ``now`` at which the clock shows ``end`` or later.
- DST gap (spring forward, e.g. 02:00 -> 03:00): an ``end`` that the clock skips
  (02:30) ends the window at the jump itself (03:00 new time), the first instant the clock
  is past ``end``; Python's default would read 02:30 with the old offset, 30 minutes late.
- DST overlap (fall back, e.g. 02:00 -> 01:00): a wall time the clock shows twice is quiet
  both times, so a window ending at 01:30 ends at the *second* 01:30 when ``now`` is in the
  repeated hour, and at the first one otherwise.  The window is an hour longer that night,
  as the clock on the wall says.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Quiet = tuple[str, str, str]  # (start "HH:MM", end "HH:MM", IANA tz), as in UserRow.quiet


@lru_cache(maxsize=4096)
def _hhmm(s: str) -> time:
    h, m = s.split(":")
    return time(int(h), int(m))


@lru_cache(maxsize=1024)
def _zone(tz: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def inside(start: time, end: time, t: time) -> bool:
    """Is wall time ``t`` inside [start, end) (wrapping midnight when start > end)?"""
    if start < end:
        return start <= t < end
    if start > end:
        return t >= start or t < end
    return False


def quiet_end_ms(quiet: Quiet | None, now_ms: int) -> int | None:
    """When the quiet window that ``now_ms`` is in ends (epoch ms), or None when ``now_ms``
    is not in quiet hours (or there are none, or the zone is unknown: settings are
    validated on arrival, so that only happens if a zone is removed from tzdata)."""
    if quiet is None:
        return None
    zone = _zone(quiet[2])
    if zone is None:
        return None
    start, end = _hhmm(quiet[0]), _hhmm(quiet[1])
    now = datetime.fromtimestamp(now_ms / 1000, zone)
    t = now.time()
    if not inside(start, end, t):
        return None
    day = now.date() if t < end else now.date() + timedelta(days=1)
    return _first_instant_at_or_after(day, end, zone, now_ms)


def _first_instant_at_or_after(day: date, wall: time, zone: ZoneInfo, after_ms: int) -> int:
    """The first instant later than ``after_ms`` at which the clock in ``zone`` on ``day``
    shows ``wall`` (or, in a DST gap that skips ``wall``, the instant of the jump)."""
    local = datetime.combine(day, wall, tzinfo=zone)
    u0 = int(local.timestamp() * 1000)  # fold=0: the earlier reading in an overlap
    u1 = int(local.replace(fold=1).timestamp() * 1000)  # the later one
    if u0 == u1:  # an ordinary time, shown once
        return u0
    if u0 < u1:  # overlap: shown twice; the first one still ahead of now
        return u0 if u0 > after_ms else u1
    # gap: fold=1 (u1) reads it with the new offset, before the jump; fold=0 (u0) with the
    # old one, after it.  The jump lies between; transitions fall on whole seconds.
    lo, hi = u1 // 1000, u0 // 1000
    before = _offset(lo, zone)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, zone) == before:
            lo = mid
        else:
            hi = mid
    return hi * 1000


def _offset(epoch_s: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(epoch_s, UTC).astimezone(zone).utcoffset()
