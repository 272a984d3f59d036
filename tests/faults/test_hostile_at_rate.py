"""Hostile records at production rate, through crashes: 20,000 in-app requests published at
~5,000/s with a hostile record after every 50th (8 kinds, 400 in all) on notify.requests,
and the main lane killed with SIGKILL 3 times while they arrive.  Counted once the system
is idle (inboxes and notify.rejected unchanged for 5 s): every good request in its inbox
exactly once, every hostile one on notify.rejected, every flow process alive."""

from __future__ import annotations

import base64
import time
import uuid

import orjson
import redis
from confluent_kafka import Consumer, TopicPartition

from notiflow.topics import partition_for
from tests.faults.conftest import SUMMARY, P

N, USERS, RATE = 20_000, 500, 5_000
KILL_AT = (5_000, 10_000, 15_000)


def hostile(mark: str, i: int) -> bytes:
    """One of 8 kinds, each starting with (or holding within its first 1 KiB) ``mark``."""
    base = {"id": mark, "type": "a.b", "created_at": 1, "recipients": ["u1"], "body": "b"}
    k = i % 8
    if k == 0:
        return f"{mark} not json".encode()
    if k == 1:  # nested far past any decoder's patience
        return (f'{{"id":"{mark}","type":"a.b","created_at":1,"recipients":["u"],"body":"b",'
                '"data":' + "[" * 2000 + "]" * 2000 + "}").encode()
    if k == 2:  # 600 KB once escaped: its rejected record must stay small
        return (f'{{"id":"{mark}","body":"' + '\\"' * 300_000 + '"}').encode()
    if k == 3:
        return orjson.dumps({**base, "type": "marketing.weekly\n"})
    if k == 4:
        return orjson.dumps({**base, "recipients": ["x\nvictim"]})
    if k == 5:
        return orjson.dumps({**base, "collapse_key": "x\r\napns-push-type: voip"})
    if k == 6:
        return mark.encode() + b"\xff\xfe\x00 not UTF-8"
    return (f'{{"id":"{mark}","type":"a.b","created_at":{10**30},"recipients":["u1"],'
            '"body":"b"}').encode()


def rejected_marks(brokers: str, prefix: bytes) -> set[bytes]:
    """The distinct marks (prefix + 5 digits) on notify.rejected (in the excerpt, text or
    base64)."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": uuid.uuid4().hex,
                  "enable.auto.commit": False})
    meta = c.list_topics("notify.rejected", timeout=10).topics["notify.rejected"]
    tps = [TopicPartition("notify.rejected", p, 0) for p in meta.partitions]
    c.assign(tps)
    ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
    seen: set[bytes] = set()
    done = {p for p, end in ends.items() if end == 0}
    while len(done) < len(tps):
        for m in c.consume(1000, 1):
            if m.error():
                continue
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
            v = m.value() or b""
            try:
                b64 = orjson.loads(v).get("payload_b64")
            except orjson.JSONDecodeError:  # not one of ours: say so, search its bytes
                print(f"notify.rejected[{m.partition()}]@{m.offset()} is not JSON: {v[:80]!r}")
                b64 = None
            if b64:
                v += base64.b64decode(b64)
            j = v.find(prefix)
            if j >= 0:
                seen.add(v[j: j + len(prefix) + 5])  # the mark: prefix + 5 digits
    c.close()
    return seen


def test_fault_hostile_records_at_rate_through_kill9(stack, flows, producer):
    run = uuid.uuid4().hex[:6]
    users = [f"hr{run}-{i}" for i in range(USERS)]
    prefix = f"BAD{run}-"
    bad = 0
    t0 = time.time()
    for i in range(N):
        u = users[i % USERS]
        producer.produce("notify.requests", orjson.dumps({
            "v": 1, "id": f"hr{run}-{i}", "type": "test.attack", "recipients": [u],
            "channels": ["inapp"], "body": str(i), "created_at": int(time.time() * 1000)}),
            u.encode(), partition=partition_for(u, P))
        if i % 50 == 25:
            producer.produce("notify.requests", hostile(f"{prefix}{bad:05d}", bad), u.encode(),
                             partition=partition_for(u, P))
            bad += 1
        if i % 1000 == 0:
            producer.poll(0)
            ahead = i / RATE - (time.time() - t0)
            if ahead > 0:
                time.sleep(ahead)  # pacing the publisher at RATE, not waiting for a result
        if i in KILL_AT:
            flows.kill9("main")
            flows.start(("main",))
    producer.flush(30)
    rate = (N + bad) / (time.time() - t0)
    r = redis.Redis.from_url(stack.redis_url)

    def state() -> tuple[int, int]:
        return (sum(int(r.get(f"nf:badge:{u}") or 0) for u in users),
                len(rejected_marks(stack.brokers, prefix.encode())))

    last, unchanged, deadline = state(), 0, time.time() + 180
    while unchanged < 5 and time.time() < deadline:  # idle: nothing moved for 5 s
        time.sleep(1)
        now = state()
        unchanged = unchanged + 1 if now == last else 0
        last = now
    ids = [orjson.loads(e)["id"] for u in users for e in r.lrange(f"nf:inbox:{u}", 0, -1)]
    dead = [s.name for s in flows.services if not s.alive]
    row = {"fault": f"kill -9 main 3x, {N:,} at {rate:,.0f}/s + {bad} hostile",
           "injected": len(KILL_AT) + bad, "accepted": N, "delivered": len(set(ids)),
           "lost": N - len(set(ids)), "duplicated": len(ids) - len(set(ids))}
    SUMMARY.append(row)
    print(f"\n{row}; hostile on notify.rejected: {last[1]} of {bad}; dead flows: {dead}")
    assert row["lost"] == 0 and row["duplicated"] == 0, row
    assert last[1] == bad, f"{last[1]} of {bad} hostile records on notify.rejected"
    assert dead == []
