"""In-app writes to Redis, on a real redis-server with the real in-app sink script.

* Pull-on-read merge never duplicates an entry the member was pushed, even after the
  in-app sent-marker expired (markers live NOTIFLOW_SENT_MARKER_TTL_S, 48 h; pull entries
  NOTIFLOW_PULL_TTL_S, 7 d).
* A sink batch split over several script calls writes each item once, and reports the
  calls that landed when Redis fails between two of them."""

from __future__ import annotations

import uuid

import msgspec
import pytest
import redis

from operators.fanout import pull_entry
from schemas.request import Audience, NotificationRequest
from schemas.task import DeliveryTask
from sinks.inapp import INBOX, InappWriter
from sinks.markers import marker_key
from sinks.pull_feed import FanoutRedis, merge_into_inbox
from stack.services import start_redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    svc = start_redis(log_dir=tmp_path_factory.mktemp("redis-pull"))
    try:
        yield svc.url
    finally:
        svc.stop()


def _broadcast(nid: str, now_ms: int) -> NotificationRequest:
    return NotificationRequest(id=nid, type="news.post", created_at=now_ms - 1000,
                               audience=Audience(kind="all"), title="News", body="b")


def test_pushed_member_does_not_get_the_pull_entry_again_after_marker_expiry(redis_url):
    r = redis.Redis.from_url(redis_url)
    r.flushdb()  # "all" is read by every merge: start each test without the other's entry
    user, nid = f"u-{uuid.uuid4().hex[:8]}", f"n-{uuid.uuid4().hex[:8]}"
    now = 1_900_000_000_000
    req = _broadcast(nid, now)
    # the flow: the pull entry stored once, and this (active) member pushed in-app now
    fr = FanoutRedis(redis_url, pull_max=500, pull_ttl_s=10**9, status_ttl_s=3600)
    fr.write([("all", pull_entry(req), now)], [], [], [])
    writer = InappWriter(redis_url, inbox_max=200, marker_ttl_s=3600, live="user")
    task = DeliveryTask(notification_id=nid, user_id=user, type=req.type, priority="normal",
                        channel="inapp", provider="redis", target_id="inbox", address="",
                        title=req.title, body=req.body, template=None, data=None,
                        collapse_key=None, created_ms=req.created_at)
    assert writer.write([task]) == [True]
    # the user does not open the app for longer than the marker lives
    assert r.delete(marker_key(task)) == 1
    assert merge_into_inbox(r, user, now_ms=now + 1000) == 0
    ids = [msgspec.json.decode(e)["id"] for e in r.lrange(INBOX + user, 0, -1)]
    assert ids == [nid], f"inbox holds the broadcast {ids.count(nid)} times"
    writer.close()
    fr.close()
    r.close()


def test_inactive_member_still_gets_the_pull_entry_once(redis_url):
    r = redis.Redis.from_url(redis_url)
    r.flushdb()  # "all" is read by every merge: start each test without the other's entry
    user, nid = f"u-{uuid.uuid4().hex[:8]}", f"n-{uuid.uuid4().hex[:8]}"
    now = 1_900_000_000_000
    fr = FanoutRedis(redis_url, pull_max=500, pull_ttl_s=10**9, status_ttl_s=3600)
    fr.write([("all", pull_entry(_broadcast(nid, now)), now)], [], [], [])
    assert merge_into_inbox(r, user, now_ms=now + 1000) == 1
    assert merge_into_inbox(r, user, now_ms=now + 2000) == 0
    fr.close()
    r.close()


def test_inapp_batches_over_one_script_call_keep_every_item_and_the_markers(redis_url):
    """A sink batch larger than SCRIPT_ITEMS is written in several script calls (so Redis
    serves other clients between them): every item lands once, a replay writes nothing."""
    from sinks.inapp import SCRIPT_ITEMS

    r = redis.Redis.from_url(redis_url)
    writer = InappWriter(redis_url, inbox_max=10, marker_ttl_s=3600, live="batch")
    n = 2 * SCRIPT_ITEMS + 7
    users = [f"c-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    tasks = [DeliveryTask(notification_id=f"n-{i}", user_id=u, type="t", priority="normal",
                          channel="inapp", provider="redis", target_id="inbox", address="",
                          title="t", body="b", template=None, data=None, collapse_key=None,
                          created_ms=1) for i, u in enumerate(users)]
    assert writer.write(tasks + tasks[:1]) == [True] * n + [False]  # in-batch copy: once
    assert writer.write(tasks) == [False] * n
    assert [r.llen(INBOX + u) for u in (users[0], users[SCRIPT_ITEMS], users[-1])] == [1, 1, 1]
    writer.close()
    r.close()


def test_inapp_sender_reports_the_calls_that_landed_before_redis_failed(redis_url):
    """Redis fails between two script calls of one batch: the first call's items are sent
    (their markers are set, a retry would only see duplicates), the rest go to retry."""
    from notiflow.config import Settings
    from sinks.channels import InappSender
    from sinks.inapp import SCRIPT_ITEMS

    sender = InappSender(Settings(redis_url=redis_url))
    calls = 0
    real = sender._w._script

    def second_call_fails(*a, **kw):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise redis.ConnectionError("Redis went away")
        return real(*a, **kw)

    sender._w._script = second_call_fails
    tasks = [DeliveryTask(notification_id=f"n-{uuid.uuid4().hex[:8]}", user_id="pw",
                          type="t", priority="normal", channel="inapp", provider="redis",
                          target_id="inbox", address="", title="t", body="b", template=None,
                          data=None, collapse_key=None, created_ms=1)
             for _ in range(SCRIPT_ITEMS + 5)]
    res = sender.send(tasks)
    assert [r.status for r in res] == ["sent"] * SCRIPT_ITEMS + ["retry"] * 5
    assert "Redis went away" in res[-1].reason
    sender.close()
