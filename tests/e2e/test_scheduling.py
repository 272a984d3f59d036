"""Quiet hours, send_at and collapse-key bundling over the real stack.

The main and critical lanes run as real Bytewax processes (timers on Bytewax's clock);
requests and settings go through Tansu, deliveries to Redis and the provider sandbox,
receipts through the loader into chDB.  The social.like bundling window is 3 s here.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis

from loader.client import local_sql
from notiflow.topics import partition_for
from operators.bundler import bundle_id
from sandbox.client import SandboxControl
from schemas.identity import identity
from tests.lanes import run_lanes
from tests.ordering import settle

P = 4
WINDOW_S = 3
ZONE = "Asia/Kolkata"  # any zone: the window is built around its "now"


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def flows(stack, tmp_path_factory):
    env = {**stack.env(), "NOTIFLOW_BUNDLE_WINDOWS_S": orjson.dumps({"social.like": WINDOW_S}).decode()}
    yield from run_lanes(env, tmp_path_factory, ("main", "critical"), "sched")


@pytest.fixture(scope="module")
def rds(stack):
    r = redis.Redis.from_url(stack.redis_url)
    yield r
    r.close()


def uid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def quiet_now() -> dict:
    """Quiet hours from an hour ago to two hours ahead in ZONE: "now" is inside them."""
    t = datetime.now(ZoneInfo(ZONE))
    return {"start": (t - timedelta(hours=1)).strftime("%H:%M"),
            "end": (t + timedelta(hours=2)).strftime("%H:%M"), "tz": ZONE}


def put_user(producer, user, *, devices=(), **settings):
    p = partition_for(user, P)
    producer.produce("notify.settings", orjson.dumps({"v": 1, "user_id": user, **settings}),
                     user.encode(), partition=p)
    for token_id, platform, token in devices:
        producer.produce("notify.devices", orjson.dumps({
            "v": 1, "user_id": user, "token_id": token_id, "platform": platform,
            "token": token, "active": True}), f"{user}:{token_id}".encode(), partition=p)
    producer.flush(10)


def send(producer, user, nid, *, topic="notify.requests", **fields):
    body = {"v": 1, "id": nid, "type": "social.comment", "recipients": [user],
            "title": "Hello", "body": f"body of {nid}", "channels": ["inapp"],
            "created_at": now_ms(), **fields}
    producer.produce(topic, orjson.dumps(body), user.encode(), partition=partition_for(user, P))


def receipts(stack, nids: list[str]) -> list[tuple]:
    """(notification_id, channel, outcome, reason, event_ms) rows of these notifications."""
    ids = ",".join(f"'{n}'" for n in nids)
    rows = local_sql(stack.loader_socket, timeout=10, text=(
        "SELECT notification_id, channel, outcome, reason, event_ms FROM notiflow.receipts "
        f"WHERE notification_id IN ({ids}) ORDER BY notification_id, channel")).rows
    return [tuple(row) for row in rows]


def wait_receipts(stack, producer, users: list[str], nids: list[str], want: int,
                  timeout: float = 60, channels=("inapp",)) -> list[tuple]:
    """At least ``want`` receipts, then every receipt these users' partitions make before a
    later marker request is delivered (a wrong extra one would be among them)."""
    deadline = time.time() + timeout
    rows: list[tuple] = []
    while time.time() < deadline:
        rows = receipts(stack, nids)
        if len(rows) >= want:
            settle(producer, stack, P, users=users, lanes=("main", "critical"),
                   channels=channels)
            return receipts(stack, nids)
        time.sleep(0.2)
    pytest.fail(f"only {len(rows)} of {want} receipts for {nids} after {timeout}s: {rows}")


def inbox_ids(rds, user: str) -> list[str]:
    return [orjson.loads(e)["id"] for e in rds.lrange(f"nf:inbox:{user}", 0, -1)]


def test_send_at_delivers_after_send_at_and_not_before(stack, flows, producer, rds):
    user, nid = uid("sa"), uid("n-sched")
    send_at = now_ms() + 8000
    send(producer, user, nid, send_at=send_at)
    producer.flush(10)
    settle(producer, stack, P, users=[user])  # a later request on its partition went out
    assert now_ms() < send_at, "the marker took until send_at: nothing shown about before"
    assert inbox_ids(rds, user) == [] and receipts(stack, [nid]) == []
    [row] = wait_receipts(stack, producer, [user], [nid], want=1)
    assert row[1:3] == ("inapp", "sent")
    assert row[4] >= send_at
    assert inbox_ids(rds, user) == [nid]


def test_quiet_hours_hold_until_settings_remove_them_and_critical_goes_at_once(
        stack, flows, producer, rds):
    user = uid("qh")
    put_user(producer, user, quiet_hours=quiet_now())
    held, crit = uid("n-held"), uid("n-crit")
    send(producer, user, held)
    send(producer, user, crit, topic="notify.critical", priority="critical", type="auth.code")
    producer.flush(10)
    [row] = wait_receipts(stack, producer, [user], [crit], want=1)
    assert row[1:3] == ("inapp", "sent")
    settle(producer, stack, P, users=[user])  # a later request on its partition went out
    assert receipts(stack, [held]) == []
    assert inbox_ids(rds, user) == [crit]

    put_user(producer, user)  # quiet hours removed: held ones go at the next tick
    [row] = wait_receipts(stack, producer, [user], [held], want=1)
    assert row[1:3] == ("inapp", "sent")
    assert inbox_ids(rds, user) == [held, crit]


def test_quiet_hours_expiry_while_held_is_an_expired_receipt(stack, flows, producer, rds):
    user, nid = uid("qx"), uid("n-exp")
    put_user(producer, user, quiet_hours=quiet_now())
    t = now_ms()
    send(producer, user, nid, created_at=t, expires_at=t + 3000)
    producer.flush(10)
    [row] = wait_receipts(stack, producer, [user], [nid], want=1)
    assert row[2:4] == ("expired", "expired while held for quiet hours")
    assert row[4] >= t + 3000
    assert inbox_ids(rds, user) == []


def test_ten_likes_inside_the_window_become_one_push_with_collapse_id(stack, flows, producer):
    user, photo = uid("bl"), uid("photo")
    token = uuid.uuid4().hex * 2
    put_user(producer, user, devices=[("iphone", "apns", token)])
    ck = f"likes:{photo}"
    likes = [uid(f"n-like{i}") for i in range(10)]
    for i, nid in enumerate(likes):
        send(producer, user, nid, type="social.like", channels=["push"], collapse_key=ck,
             dedup={"actor": f"fan{i}", "object": photo}, body=f"fan{i} liked your photo",
             data={"actor_name": f"Fan {i}", "bundle_verb": "liked your photo"})
    producer.flush(10)
    bid = bundle_id(user, ck, [identity("", "social.like", (f"fan{i}", photo), nid, user)
                               for i, nid in enumerate(likes)])  # the members' identities
    rows = wait_receipts(stack, producer, [user], likes + [bid], want=11,
                         channels=("push",))
    assert sorted((r[0], r[2]) for r in rows) == sorted(
        [(n, "bundled") for n in likes] + [(bid, "sent")])
    with SandboxControl(stack.sandbox_url) as sandbox:
        pushed = [m for m in sandbox.messages("apns") if m["target"] == token]
    assert len(pushed) == 1
    assert pushed[0]["nid"] == bid and pushed[0]["collapse_id"] == ck
    assert pushed[0]["body"] == "Fan 0, Fan 1, Fan 2 and 7 others liked your photo"


def test_settle_returns_only_after_earlier_requests_on_the_partition_are_delivered(
        stack, flows, producer, rds):
    """The premise of every absence asserted after ``settle``: what the partition had to
    deliver before the marker is delivered when ``settle`` returns (no wait after it)."""
    user = uid("early")
    nids = [uid("n-before") for _ in range(20)]
    for n in nids:
        send(producer, user, n)
    producer.flush(10)
    settle(producer, stack, P, users=[user])
    assert sorted(inbox_ids(rds, user)) == sorted(nids)
    assert len(receipts(stack, nids)) == len(nids)
