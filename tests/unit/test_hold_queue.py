"""HoldQueue alone, then the partition's hold rules: quiet hours, send_at, expiry, settings."""

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from notiflow.topics import partition_for
from operators.hold_queue import QUIET, SEND_AT, HoldQueue
from operators.partition import REQUEST, SETTINGS, PartitionProcessor

N = 4
T0 = 1_764_050_000_000


def test_hold_queue_releases_by_due_time_earliest_first():
    q = HoldQueue()
    q.add("u1", b"c", T0 + 300, QUIET)
    q.add("u2", b"a", T0 + 100, SEND_AT)
    q.add("u1", b"b", T0 + 200, QUIET)
    assert q.next_wake_ms() == T0 + 100
    assert list(q.pop_due(T0 + 99)) == []
    got = list(q.pop_due(T0 + 200))
    assert [(h.user, h.reason, h.value) for h in got] == [("u2", SEND_AT, b"a"), ("u1", QUIET, b"b")]
    assert len(q) == 1 and q.held_for("u1") == 1 and q.held_for("u2") == 0
    assert q.next_wake_ms() == T0 + 300


def test_hold_queue_wakes_for_an_expiry_before_the_due_time():
    q = HoldQueue()
    q.add("u1", b"x", T0 + 10_000, QUIET, expires_ms=T0 + 500)
    q.add("u1", b"y", T0 + 10_000, QUIET, expires_ms=T0 + 99_000)  # released first anyway
    assert q.next_wake_ms() == T0 + 500
    assert [h.value for h in q.pop_expired(T0 + 500)] == [b"x"]
    assert q.next_wake_ms() == T0 + 10_000
    assert list(q.pop_due(T0 + 10_000))[0].value == b"y"
    assert q.next_wake_ms() is None and len(q) == 0


def test_hold_queue_recheck_user_makes_their_items_due_now_once():
    q = HoldQueue()
    q.add("u1", b"a", T0 + 5000, QUIET)
    q.add("u2", b"b", T0 + 5000, QUIET)
    assert q.recheck_user("u1", T0) == 1
    assert q.next_wake_ms() == T0
    assert [h.value for h in q.pop_due(T0)] == [b"a"]
    assert [h.value for h in q.pop_due(T0 + 5000)] == [b"b"]  # the stale entry of a is skipped
    assert len(q) == 0 and q.next_wake_ms() is None


def test_hold_queue_snapshot_restore_round_trip():
    q = HoldQueue()
    q.add("u1", b"a", T0 + 100, QUIET, expires_ms=T0 + 50)
    q.add("\u00fcser", b"b" * 300, T0 + 200, SEND_AT)
    q2 = HoldQueue.restore(q.snapshot())
    assert q2.next_wake_ms() == T0 + 50
    q2.add("u3", b"c", T0 + 150, QUIET)  # seqs keep counting: no clash with restored ones
    assert [h.value for h in q2.pop_expired(T0 + 50)] == [b"a"]
    assert [(h.user, h.value) for h in q2.pop_due(T0 + 300)] == [("u3", b"c"), ("\u00fcser", b"b" * 300)]


def test_hold_queue_full():
    q = HoldQueue(max_items=2)
    q.add("u", b"a", T0, QUIET)
    assert not q.full()
    q.add("u", b"b", T0, QUIET)
    assert q.full()


# -- the partition's rules --------------------------------------------------------------

PARIS = "Europe/Paris"
NIGHT = int(datetime(2025, 11, 25, 23, 0, tzinfo=ZoneInfo(PARIS)).timestamp() * 1000)
MORNING = int(datetime(2025, 11, 26, 7, 0, tzinfo=ZoneInfo(PARIS)).timestamp() * 1000)


def user_in(p: int, prefix: str = "q") -> str:
    i = 0
    while partition_for(f"{prefix}{i}", N) != p:
        i += 1
    return f"{prefix}{i}"


def req(user: str, nid: str = "n1", **kw) -> bytes:
    body = {"id": nid, "type": "social.comment", "created_at": NIGHT - 1000,
            "recipients": [user], "body": "hi", "channels": ["inapp"], **kw}
    return orjson.dumps(body)


def quiet(user: str, **q) -> bytes:
    return orjson.dumps({"user_id": user, "quiet_hours": {"start": "22:00", "end": "07:00",
                                                          "tz": PARIS, **q}})


@pytest.fixture
def proc() -> PartitionProcessor:
    return PartitionProcessor(0, N)


@pytest.fixture
def user(proc) -> str:
    u = user_in(0)
    proc.process([(SETTINGS, u.encode(), quiet(u), 0)], NIGHT)
    return u


def test_partition_holds_in_quiet_hours_until_they_end(proc, user):
    out = proc.process([(REQUEST, user.encode(), req(user), 1)], NIGHT)
    assert out.inapp == [] and out.receipts == []
    assert proc.next_wake_ms() == MORNING
    assert proc.tick(MORNING - 1).inapp == []
    assert [t.notification_id for t in proc.tick(MORNING).inapp] == ["n1"]
    assert proc.next_wake_ms() is None


def test_partition_critical_skips_quiet_hours(proc, user):
    out = proc.process([(REQUEST, user.encode(), req(user, priority="critical"), 1)], NIGHT)
    assert [t.notification_id for t in out.inapp] == ["n1"]
    crit = PartitionProcessor(0, N, lane="critical")
    crit.process([(SETTINGS, user.encode(), quiet(user), 0)], NIGHT)
    assert len(crit.process([(REQUEST, user.encode(), req(user), 1)], NIGHT).inapp) == 1


def test_partition_send_at_holds_even_critical_and_then_checks_quiet_hours(proc, user):
    later = NIGHT - 3 * 3600_000  # 20:00, before quiet hours
    proc.process([(REQUEST, user.encode(), req(user, "c", send_at=later + 60_000,
                                                priority="critical", created_at=later - 1), 1),
                  (REQUEST, user.encode(), req(user, "n", send_at=NIGHT + 60_000), 2)], later)
    assert [t.notification_id for t in proc.tick(later + 60_000).inapp] == ["c"]
    assert proc.tick(NIGHT + 60_000).inapp == []  # send_at came inside quiet hours: held on
    assert proc.next_wake_ms() == MORNING
    assert [t.notification_id for t in proc.tick(MORNING).inapp] == ["n"]


def test_partition_send_at_for_a_user_without_settings(proc):
    u = user_in(0, "plain")
    out = proc.process([(REQUEST, u.encode(), req(u, send_at=NIGHT + 3000), 1)], NIGHT)
    assert out.inapp == [] and proc.next_wake_ms() == NIGHT + 3000
    assert len(proc.tick(NIGHT + 3000).inapp) == 1


def test_partition_dedups_on_arrival_while_the_first_is_held(proc, user):
    what = {"actor": "a", "object": "o"}
    out = proc.process([(REQUEST, user.encode(), req(user, "n1", dedup=what), 1),
                        (REQUEST, user.encode(), req(user, "n2", dedup=what), 2)], NIGHT)
    assert [(r.notification_id, r.outcome) for r in out.receipts] == [("n2", "duplicate")]
    assert len(proc.tick(MORNING).inapp) == 1


def test_partition_drops_what_expires_while_held_on_time(proc, user):
    proc.process([(REQUEST, user.encode(), req(user, expires_at=NIGHT + 600_000), 1)], NIGHT)
    assert proc.next_wake_ms() == NIGHT + 600_000
    out = proc.tick(NIGHT + 600_000)
    assert [(r.notification_id, r.outcome, r.reason) for r in out.receipts] == [
        ("n1", "expired", "expired while held for quiet hours")]
    assert proc.next_wake_ms() is None and proc.tick(MORNING).inapp == []


def test_partition_settings_change_releases_or_moves_held(proc, user):
    proc.process([(REQUEST, user.encode(), req(user, "a"), 1)], NIGHT)
    # quiet hours moved to end at 06:00: re-held until then, not until 07:00
    proc.process([(SETTINGS, user.encode(), quiet(user, end="06:00"), 2)], NIGHT + 1000)
    assert proc.next_wake_ms() == NIGHT + 1000
    assert proc.tick(NIGHT + 1000).inapp == []
    assert proc.next_wake_ms() == MORNING - 3600_000
    # quiet hours removed: released at the next tick
    proc.process([(SETTINGS, user.encode(), orjson.dumps({"user_id": user}), 3)], NIGHT + 2000)
    assert [t.notification_id for t in proc.tick(NIGHT + 2000).inapp] == ["a"]


def test_partition_hold_full_gives_a_failed_receipt(user):
    proc = PartitionProcessor(0, N, hold_max=1)
    proc.process([(SETTINGS, user.encode(), quiet(user), 0)], NIGHT)
    out = proc.process([(REQUEST, user.encode(), req(user, "a"), 1),
                        (REQUEST, user.encode(), req(user, "b"), 2)], NIGHT)
    assert [(r.notification_id, r.outcome) for r in out.receipts] == [("b", "failed")]
    assert "held on partition 0 already" in out.receipts[0].reason


def test_partition_held_items_survive_snapshot_restore(proc, user):
    proc.process([(REQUEST, user.encode(), req(user), 1)], NIGHT)
    again = PartitionProcessor(0, N)
    again.restore(proc.snapshot())
    assert again.next_wake_ms() == MORNING
    assert [t.notification_id for t in again.tick(MORNING).inapp] == ["n1"]
