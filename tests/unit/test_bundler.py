"""Collapse-key bundling: windows by type, the combined notification, receipts, recovery."""

import pickle

import orjson
import pytest

from notiflow.topics import partition_for
from operators.bundler import actors_phrase, bundle_id, window_for
from operators.partition import DEVICES, REQUEST, SETTINGS, PartitionProcessor
from schemas.request import decode_request

N = 4
T0 = 1_764_050_000_000
WINDOWS = {"social": 30, "social.like": 60, "social.like.story": 0}


@pytest.mark.parametrize("type_, window", [
    ("social.like", 60), ("social.like.photo", 60), ("social.comment", 30),
    ("social.like.story", 0), ("socialite", 0), ("auth.code", 0)])
def test_bundle_window_longest_dotted_prefix(type_, window):
    assert window_for(type_, WINDOWS) == window


@pytest.mark.parametrize("names, count, text", [
    (["John"], 1, "John"), (["John", "Ann"], 2, "John and Ann"),
    (["John", "Ann", "Bo"], 3, "John, Ann and Bo"), (["John"], 10, "John and 9 others"),
    (["John", "Ann"], 3, "John, Ann and 1 other"), ([], 4, "4 people")])
def test_bundle_actors_phrase(names, count, text):
    assert actors_phrase(names, count) == text


def user_in(p: int, prefix: str = "b") -> str:
    i = 0
    while partition_for(f"{prefix}{i}", N) != p:
        i += 1
    return f"{prefix}{i}"


def like(user: str, i: int, **kw) -> bytes:
    body = {"id": f"like-{i}", "type": "social.like", "created_at": T0 - 100 + i,
            "recipients": [user], "title": "New like", "body": f"a{i} liked your photo",
            "collapse_key": "likes:photo9", "dedup": {"actor": f"a{i}", "object": "photo9"},
            "data": {"photo": "9", "actor_name": f"Actor {i}", "bundle_verb": "liked your photo"},
            "channels": ["push", "inapp"], **kw}
    return orjson.dumps(body)


def keys(user: str, members) -> list[bytes]:
    """The identities of like requests ``members``, as a bundle's id covers them."""
    return [decode_request(like(user, i)).dedup_key(user) for i in members]


@pytest.fixture
def proc() -> PartitionProcessor:
    return PartitionProcessor(0, N, bundle_windows={"social.like": 60})


@pytest.fixture
def user(proc) -> str:
    u = user_in(0)
    proc.process([(SETTINGS, u.encode(), orjson.dumps({"user_id": u}), 0),
                  (DEVICES, u.encode(), orjson.dumps({"user_id": u, "token_id": "d1",
                                                      "platform": "apns", "token": "ab" * 32}), 0)],
                 T0)
    return u


def test_bundle_ten_likes_become_one_push_with_a_receipt_each(proc, user):
    out = proc.process([(REQUEST, user.encode(), like(user, i), i) for i in range(10)], T0)
    assert out.push == [] and out.inapp == [] and out.receipts == []
    assert proc.next_wake_ms() == T0 + 60_000
    assert proc.tick(T0 + 59_999).push == []
    out = proc.tick(T0 + 60_000)
    [push] = out.push
    [inapp] = out.inapp
    bid = bundle_id(user, "likes:photo9", keys(user, range(10)))
    assert push.notification_id == inapp.notification_id == bid
    assert push.collapse_key == "likes:photo9"
    assert push.body == "Actor 0, Actor 1, Actor 2 and 7 others liked your photo"
    b = push.data["bundle"]
    assert b["count"] == 10 and b["actors"] == ["a0", "a1", "a2"]
    assert b["ids"] == [f"like-{i}" for i in range(10)] and push.data["photo"] == "9"
    assert push.created_ms == T0 - 100  # latency counts from the first member
    assert sorted((r.notification_id, r.outcome) for r in out.receipts) == sorted(
        (f"like-{i}", "bundled") for i in range(10))
    assert all(bid in r.reason for r in out.receipts)
    assert proc.next_wake_ms() is None


def test_bundle_of_one_is_sent_unchanged_after_the_window(proc, user):
    proc.process([(REQUEST, user.encode(), like(user, 1), 1)], T0)
    out = proc.tick(T0 + 60_000)
    assert [(t.notification_id, t.body) for t in out.push] == [("like-1", "a1 liked your photo")]
    assert out.receipts == []


def test_bundle_without_verb_keeps_latest_text_and_counts(proc, user):
    proc.process([(REQUEST, user.encode(), like(user, i, data={}), i) for i in range(3)], T0)
    [push] = proc.tick(T0 + 60_000).push
    assert push.body == "a2 liked your photo (+2 more)"
    assert push.data["bundle"]["actor_names"] == ["a0", "a1", "a2"]


def test_bundle_keys_by_user_and_collapse_key(proc, user):
    other = user_in(0, "c")
    proc.process([(REQUEST, user.encode(), like(user, 1), 1),
                  (REQUEST, user.encode(), like(user, 2, collapse_key="likes:photo10"), 2),
                  (REQUEST, other.encode(), like(other, 3, channels=["inapp"]), 3)], T0)
    out = proc.tick(T0 + 60_000)
    assert sorted(t.notification_id for t in out.inapp) == ["like-1", "like-2", "like-3"]


def test_bundle_skips_critical_types_without_window_and_no_collapse_key(proc, user):
    out = proc.process([
        (REQUEST, user.encode(), like(user, 1, priority="critical"), 1),
        (REQUEST, user.encode(), like(user, 2, type="social.comment"), 2),
        (REQUEST, user.encode(), like(user, 3, collapse_key=None), 3)], T0)
    assert sorted(t.notification_id for t in out.inapp) == ["like-1", "like-2", "like-3"]
    assert proc.next_wake_ms() is None


def test_bundle_member_expiring_inside_the_window_is_dropped(proc, user):
    proc.process([(REQUEST, user.encode(), like(user, 1, expires_at=T0 + 1000), 1),
                  (REQUEST, user.encode(), like(user, 2), 2)], T0)
    out = proc.tick(T0 + 60_000)
    assert [t.notification_id for t in out.inapp] == ["like-2"]
    assert [(r.notification_id, r.outcome) for r in out.receipts] == [("like-1", "expired")]


def test_bundle_closing_in_quiet_hours_is_held_and_bundles_again(proc, user):
    proc.process([(REQUEST, user.encode(), like(user, i), i) for i in range(3)], T0)
    # quiet hours start inside the window (UTC 00:00-23:59 covers T0 + 60 s)
    proc.process([(SETTINGS, user.encode(), orjson.dumps({"user_id": user, "quiet_hours": {
        "start": "00:00", "end": "23:59", "tz": "UTC"}}), 5)], T0 + 1000)
    out = proc.tick(T0 + 60_000)
    assert out.push == [] and out.receipts == []
    proc.process([(SETTINGS, user.encode(), orjson.dumps({"user_id": user}), 6)], T0 + 70_000)
    assert proc.tick(T0 + 70_000).push == []  # released into a new window
    out = proc.tick(T0 + 130_000)
    [push] = out.push
    assert push.data["bundle"]["count"] == 3
    assert push.notification_id == bundle_id(user, "likes:photo9", keys(user, range(3)))
    assert len(out.receipts) == 3


def test_bundle_survives_snapshot_restore_with_the_same_id(proc, user):
    proc.process([(REQUEST, user.encode(), like(user, i), i) for i in range(2)], T0)
    again = PartitionProcessor(0, N, bundle_windows={"social.like": 60})
    again.restore(pickle.loads(pickle.dumps(proc.snapshot())))
    assert again.next_wake_ms() == T0 + 60_000
    again.process([(REQUEST, user.encode(), like(user, 2), 2)], T0 + 1000)
    [push] = again.tick(T0 + 60_000).push
    assert push.notification_id == bundle_id(user, "likes:photo9", keys(user, range(3)))
    assert push.data["bundle"]["count"] == 3
