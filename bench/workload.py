"""Synthetic users, devices and requests for the benchmark and the end-to-end tests.

Records are produced with the same partition rule as production producers
(``notiflow.topics.partition_for``), fast: one producer, large batches, no per-message
callbacks.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import orjson
from confluent_kafka import Producer

from notiflow.topics import partition_for

CHANNEL_MIXES: dict[str, dict[str, float]] = {
    "inapp": {"inapp": 1.0},
    "push": {"push": 1.0},
    "mixed": {"inapp": 0.5, "push": 0.35, "email": 0.1, "sms": 0.05},
}


def make_producer(brokers: str) -> Producer:
    return Producer({
        "bootstrap.servers": brokers,
        "linger.ms": 20,
        "batch.num.messages": 20000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_000_000,
        "compression.type": "lz4",
    })


def produce(prod: Producer, topic: str, key: bytes | None, value: bytes | None,
            partition: int) -> None:
    while True:
        try:
            prod.produce(topic, value, key, partition=partition)
            return
        except BufferError:
            prod.poll(0.01)


def user_id(i: int) -> str:
    return f"user{i:08d}"


def settings_record(i: int) -> bytes:
    return orjson.dumps({"v": 1, "user_id": user_id(i), "email": f"{user_id(i)}@example.com",
                         "phone": f"+1555{i % 10_000_000:07d}", "locale": "en"})


def device_record(i: int) -> bytes:
    platform = "apns" if i % 2 == 0 else "fcm"
    return orjson.dumps({"v": 1, "user_id": user_id(i), "token_id": "phone",
                         "platform": platform, "token": f"{i:064x}", "active": True})


def load_users(prod: Producer, prefix: str, users: int, partitions: int,
               progress: Callable[[int], None] | None = None) -> None:
    """Settings and one device per user, on each user's partition."""
    for i in range(users):
        u = user_id(i)
        p = partition_for(u, partitions)
        produce(prod, f"{prefix}settings", u.encode(), settings_record(i), p)
        produce(prod, f"{prefix}devices", f"{u}:phone".encode(), device_record(i), p)
        if progress and i % 10_000 == 9_999:
            prod.poll(0)
            progress(10_000)
    prod.flush(60)


def requests(run: str, n: int, users: int, mix: dict[str, float], critical_share: float,
             seed: int = 7) -> Iterator[tuple[str, str, bytes, bool]]:
    """(notification id, user, payload, critical?) with created_at stamped at produce time."""
    rng = random.Random(seed)
    chans = list(mix)
    weights = [mix[c] for c in chans]
    prios = ("high", "normal", "low")
    for j in range(n):
        u = user_id(rng.randrange(users))
        crit = rng.random() < critical_share
        ch = rng.choices(chans, weights)[0]
        nid = f"{run}-{j}"
        req = {"v": 1, "id": nid, "type": "bench.event",
               "priority": "critical" if crit else prios[j % 3],
               "recipients": [u], "channels": [ch], "created_at": int(time.time() * 1000)}
        if ch == "email":  # bulk email is templated: SendGrid batches 1,000 a request
            req.update(template="d-bench-digest", data={"event": j})
        else:
            req.update(title="Bench", body=f"event {j}")
        yield nid, u, orjson.dumps(req), crit
