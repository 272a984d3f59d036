"""Asserting that something did NOT happen, without a fixed sleep.

A partition is processed in order, so once a request published *after* the one under
test is delivered, the earlier one has been decided: had it been going to be delivered (or
to get a receipt), it would have been by then.  ``settle`` publishes such a marker (a
request to a fresh user) on each partition that matters and waits, with a deadline, until
every marker is delivered: its ``sent`` receipts (one per channel) in ClickHouse and, for
in-app, its inbox entry in Redis.  Channels are sent by separate steps, so a marker goes
on the channels whose absence is asserted.  An absence asserted after ``settle`` cannot
pass by being early.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import orjson
import redis

from loader.client import local_sql
from notiflow.topics import CRITICAL, DEVICES, REQUESTS, SETTINGS, name, partition_for
from sinks.inapp import INBOX

LANE_TOPICS = {"main": name(REQUESTS), "critical": name(CRITICAL)}


def marker_user(partition: int, partitions: int) -> str:
    """A fresh user id that lands on ``partition``."""
    while True:
        u = f"marker-{uuid.uuid4().hex[:10]}"
        if partition_for(u, partitions) == partition:
            return u


def _targets(producer, user: str, p: int, channels: tuple[str, ...]) -> None:
    """The marker user's address, phone and device for the channels that need one."""
    settings: dict = {"v": 1, "user_id": user}
    if "email" in channels:
        settings["email"] = f"{user}@example.com"
    if "sms" in channels:
        settings["phone"] = f"+1555{uuid.uuid4().int % 10**7:07d}"
    producer.produce(name(SETTINGS), orjson.dumps(settings), user.encode(), partition=p)
    if "push" in channels:
        producer.produce(name(DEVICES), orjson.dumps({
            "v": 1, "user_id": user, "token_id": "phone", "platform": "apns",
            "token": uuid.uuid4().hex * 2, "active": True}), f"{user}:phone".encode(),
            partition=p)


def publish_markers(producer, partitions: int, *, users: Iterable[str] | None = None,
                    lanes: Iterable[str] = ("main",),
                    channels: Iterable[str] = ("inapp",)) -> dict[str, str]:
    """One marker per (lane, partition) (the partitions of ``users`` when given, else all)
    on ``channels``; acknowledged by the broker before returning.
    {marker notification id: its user}."""
    chans = tuple(channels)
    parts = sorted({partition_for(u, partitions) for u in users} if users is not None
                   else range(partitions))
    todo = [(lane, p, marker_user(p, partitions)) for lane in lanes for p in parts]
    if set(chans) - {"inapp"}:
        for _lane, p, u in todo:
            _targets(producer, u, p, chans)
        assert producer.flush(10) == 0  # settings before requests: the order the flow keeps
    now = int(time.time() * 1000)
    out: dict[str, str] = {}
    for lane, p, u in todo:
        nid = f"marker-{uuid.uuid4().hex[:12]}"
        body = {"v": 1, "id": nid, "type": "test.marker", "recipients": [u],
                "channels": list(chans), "title": "marker", "body": "marker",
                "created_at": now}
        if lane == "critical":
            body["priority"] = "critical"
        producer.produce(LANE_TOPICS[lane], orjson.dumps(body), u.encode(), partition=p)
        out[nid] = u
    assert producer.flush(10) == 0
    return out


def wait_delivered(stack, markers: dict[str, str], channels: Iterable[str] = ("inapp",),
                   timeout: float = 60) -> None:
    """Until every marker has its ``sent`` receipt on each channel loaded and, for in-app,
    is in its user's inbox."""
    chans = tuple(channels)
    ids = ",".join(f"'{n}'" for n in markers)
    sql = (f"SELECT count() FROM notiflow.receipts WHERE notification_id IN ({ids}) "
           f"AND outcome = 'sent'")
    want = len(markers) * len(chans)
    r = redis.Redis.from_url(stack.redis_url)
    deadline = time.time() + timeout
    try:
        while True:
            pending = [n for n, u in markers.items() if "inapp" in chans and n not in
                       {orjson.loads(e)["id"] for e in r.lrange(INBOX + u, 0, -1)}]
            loaded = 0 if pending else local_sql(stack.loader_socket, sql, timeout=10).rows[0][0]
            if not pending and loaded >= want:
                return
            if time.time() > deadline:
                raise AssertionError(f"markers not delivered after {timeout}s: "
                                     f"{len(pending)} not in an inbox, {loaded} of {want} "
                                     f"sent receipts")
            time.sleep(0.1)  # the polling interval, not a wait for the condition
    finally:
        r.close()


def settle(producer, stack, partitions: int, *, users: Iterable[str] | None = None,
           lanes: Iterable[str] = ("main",), channels: Iterable[str] = ("inapp",),
           timeout: float = 60) -> None:
    """Publish markers after what was published so far and wait until they are delivered:
    whatever those partitions were going to deliver before them has been delivered."""
    chans = tuple(channels)
    markers = publish_markers(producer, partitions, users=users, lanes=lanes, channels=chans)
    wait_delivered(stack, markers, chans, timeout)
