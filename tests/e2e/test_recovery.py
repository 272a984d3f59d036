"""Crash recovery: kill -9 the flow mid-run, restart it on the same recovery directory.

Every accepted in-app notification must land in the inbox exactly once: the snapshot
restores the source offsets and the joined state, and the in-app sink's sent-marker
absorbs what the last epoch replays.
"""

from __future__ import annotations

import time
import uuid

import orjson
import redis
from confluent_kafka import Producer

from notiflow.topics import partition_for
from stack.services import start_flow

P = 4
N = 6000


def test_recovery_kill9_mid_run_delivers_each_inapp_notification_once(stack, tmp_path):
    run = uuid.uuid4().hex[:6]
    users = [f"rec-{run}-{i}" for i in range(300)]
    prod = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 5})
    rec = tmp_path / "recovery"
    flows = start_flow("main", stack.env(), recovery_dir=rec, snapshot_s=1, log_dir=tmp_path)
    kills = 0
    try:
        for i in range(N):
            u = users[i % len(users)]
            prod.produce("notify.requests", orjson.dumps({
                "v": 1, "id": f"rec-{run}-{i}", "type": "test.recovery", "recipients": [u],
                "channels": ["inapp"], "body": str(i), "created_at": int(time.time() * 1000)}),
                u.encode(), partition=partition_for(u, P))
            if i % 1500 == 1499:  # crash at a few moments while requests keep coming
                prod.flush(10)
                time.sleep(1.5 + kills * 0.7)
                for f in flows:
                    f.kill9()
                kills += 1
                flows = start_flow("main", stack.env(), recovery_dir=rec, snapshot_s=1,
                                   log_dir=tmp_path)
        prod.flush(10)
        r = redis.Redis.from_url(stack.redis_url)
        deadline = time.time() + 90
        total = 0
        while time.time() < deadline:
            total = sum(int(r.get(f"nf:badge:{u}") or 0) for u in users)
            if total >= N:
                break
            time.sleep(0.5)
        time.sleep(2)  # anything replayed late would show up as an extra entry now
        ids = [orjson.loads(e)["id"] for u in users for e in r.lrange(f"nf:inbox:{u}", 0, -1)]
    finally:
        for f in flows:
            f.stop()
    assert kills == 4
    assert len(ids) == N, f"{len(ids)} inbox entries for {N} notifications"
    assert len(set(ids)) == N, f"{len(ids) - len(set(ids))} duplicates"
    assert sum(int(r.get(f"nf:badge:{u}") or 0) for u in users) == N
