"""Quiet hours in the user's zone: inside or not, when they end, across midnight and DST."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from operators.quiet_hours import quiet_end_ms

NY = "America/New_York"  # DST 2025: 03-09 02:00 -> 03:00, 11-02 02:00 -> 01:00


def at(local: str, tz: str = NY, fold: int = 0) -> int:
    return int(datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz), fold=fold)
               .timestamp() * 1000)


def local(ms: int | None, tz: str = NY) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).isoformat()


def test_quiet_hours_same_day_window():
    q = ("13:00", "15:00", "Europe/Paris")
    assert quiet_end_ms(q, at("2025-06-10T12:59", "Europe/Paris")) is None
    assert local(quiet_end_ms(q, at("2025-06-10T13:00", "Europe/Paris")),
                 "Europe/Paris") == "2025-06-10T15:00:00+02:00"
    assert quiet_end_ms(q, at("2025-06-10T15:00", "Europe/Paris")) is None  # end is open


@pytest.mark.parametrize("now, end", [
    ("2025-06-10T22:00", "2025-06-11T07:00:00-04:00"),  # before midnight: ends tomorrow
    ("2025-06-10T23:59", "2025-06-11T07:00:00-04:00"),
    ("2025-06-11T00:00", "2025-06-11T07:00:00-04:00"),  # after midnight: ends today
    ("2025-06-11T06:59", "2025-06-11T07:00:00-04:00"),
    ("2025-06-11T07:00", None),
    ("2025-06-11T21:59", None),
])
def test_quiet_hours_window_across_midnight(now, end):
    assert local(quiet_end_ms(("22:00", "07:00", NY), at(now))) == end


def test_quiet_hours_follow_the_users_zone_not_utc():
    q = ("22:00", "07:00", "Asia/Tokyo")  # 23:00 in Tokyo is 14:00 UTC
    now = at("2025-06-10T14:00", "UTC")
    assert local(quiet_end_ms(q, now), "Asia/Tokyo") == "2025-06-11T07:00:00+09:00"
    assert quiet_end_ms(("22:00", "07:00", "UTC"), now) is None


def test_quiet_hours_end_skipped_by_dst_gap_ends_at_the_jump():
    # 02:30 never happens on 2025-03-09: quiet ends when the clock jumps to 03:00
    end = quiet_end_ms(("22:00", "02:30", NY), at("2025-03-09T01:50"))
    assert local(end) == "2025-03-09T03:00:00-04:00"


def test_quiet_hours_across_dst_gap_keep_wall_clock_end():
    # a night of 8 wall-clock hours is 7 real hours, and ends at 07:00 new time
    now = at("2025-03-08T23:00")
    end = quiet_end_ms(("22:00", "07:00", NY), now)
    assert local(end) == "2025-03-09T07:00:00-04:00"
    assert end - now == 7 * 3600 * 1000


def test_quiet_hours_in_a_dst_overlap_follow_the_wall_clock():
    q = ("22:00", "01:30", NY)  # 01:00-02:00 happens twice on 2025-11-02
    first, second = at("2025-11-02T01:10"), at("2025-11-02T01:10", fold=1)
    assert local(quiet_end_ms(q, first)) == "2025-11-02T01:30:00-04:00"  # the first 01:30
    assert local(quiet_end_ms(q, second)) == "2025-11-02T01:30:00-05:00"  # the second one
    assert quiet_end_ms(q, at("2025-11-02T01:40")) is None  # between the two: not quiet


def test_quiet_hours_empty_window_missing_or_unknown_zone_mean_not_quiet():
    now = at("2025-06-10T23:00")
    assert quiet_end_ms(("22:00", "22:00", NY), now) is None
    assert quiet_end_ms(None, now) is None
    assert quiet_end_ms(("22:00", "07:00", "Mars/Olympus_Mons"), now) is None
