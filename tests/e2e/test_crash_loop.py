"""The crash-loop breaker end to end: a record that kills the main lane's process every time
it is read (fault injection: it exits hard, like a segfault) is skipped to notify.rejected
after the flow died on it more than 3 times (the fourth death); everything around it is delivered exactly once.

The test plays the supervisor (`make run` and Kubernetes restart a dead flow): each time the
lane dies it is started again on the same recovery folder.
"""

from __future__ import annotations

import time
import uuid

import orjson
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from notiflow.topics import partition_for
from stack.services import start_flow

P = 4
LIMIT = 3


def _rejected_with(brokers: str, needle: bytes) -> list[dict]:
    """Every notify.rejected record whose bytes contain ``needle``."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"t-{uuid.uuid4().hex}",
                  "enable.auto.commit": False})
    meta = c.list_topics("notify.rejected", timeout=10).topics["notify.rejected"]
    tps = [TopicPartition("notify.rejected", p, 0) for p in meta.partitions]
    c.assign(tps)
    ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
    out, done = [], {p for p, hi in ends.items() if hi == 0}
    deadline = time.time() + 20
    while len(done) < len(tps) and time.time() < deadline:
        for m in c.consume(500, 0.5):
            if m.error():
                continue
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
            if needle in m.value():
                out.append(orjson.loads(m.value()))
    c.close()
    return out


def test_record_that_kills_the_flow_is_skipped_after_more_than_three_deaths(stack, tmp_path):
    run = uuid.uuid4().hex[:6]
    marker = f"crash-me-{run}"
    users = [f"cl-{run}-{i}" for i in range(40)]
    victim = users[0]
    env = {**stack.env(), "NOTIFLOW_FAULT_CRASH_MARKER": marker,
           "NOTIFLOW_CRASH_LOOP_LIMIT": str(LIMIT)}
    rec = tmp_path / "recovery"

    def start():
        return start_flow("main", env, recovery_dir=rec, snapshot_s=1, log_dir=tmp_path,
                          settle_s=0)

    prod = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 2})

    def publish(i: int, user: str, body: str) -> None:
        prod.produce("notify.requests", orjson.dumps({
            "v": 1, "id": f"cl-{run}-{i}", "type": "test.crashloop", "recipients": [user],
            "channels": ["inapp"], "body": body, "created_at": int(time.time() * 1000)}),
            user.encode(), partition=partition_for(user, P))

    flows = start()
    deaths = 0
    try:
        for i in range(200):  # before the poison, on every partition and the victim's own
            publish(i, users[i % len(users)], f"good {i}")
        publish(200, victim, f"poison {marker}")
        for i in range(201, 400):  # after it: these wait behind it on the victim's partition
            publish(i, users[i % len(users)], f"good {i}")
        prod.flush(10)
        r = redis.Redis.from_url(stack.redis_url)
        deadline = time.time() + 240
        delivered = 0
        while time.time() < deadline:
            if any(not f.alive for f in flows):
                deaths += 1
                for f in flows:
                    f.stop()
                flows = start()
            delivered = sum(int(r.get(f"nf:badge:{u}") or 0) for u in users)
            if delivered >= 399 and all(f.alive for f in flows):
                break
            time.sleep(0.2)
        rejected = _rejected_with(stack.brokers, f"cl-{run}-200".encode())
        inbox_ids = [orjson.loads(e)["id"] for u in users
                     for e in r.lrange(f"nf:inbox:{u}", 0, -1)]
        alive = all(f.alive for f in flows)
        print(f"\ncrash loop: {deaths} deaths, {delivered} of 399 delivered, "
              f"{len(rejected)} rejected record(s) for the poison")
    finally:
        for f in flows:
            f.stop()
    assert deaths == LIMIT + 1, f"the flow died {deaths} times (limit {LIMIT})"
    assert alive, "the lane is not running after the poison was skipped"
    assert rejected and all("crashed the flow 4 times" in x["reason"] for x in rejected), rejected
    assert f"cl-{run}-200" not in inbox_ids
    assert len(inbox_ids) == 399 and len(set(inbox_ids)) == 399, (
        f"{len(inbox_ids)} entries, {len(inbox_ids) - len(set(inbox_ids))} duplicates")
