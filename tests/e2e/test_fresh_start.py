"""The main lane's source on the real broker (Tansu): where requests begin without a
snapshot, and control topics that end in a transaction marker or an open transaction.

A lost recovery folder must not replay the requests topic from its beginning: the lane's
sent-markers are given a 3 s TTL here, so whatever it read again after they expired would
be delivered again (the in-app badge counts it).
"""

from __future__ import annotations

import shutil
import time
import uuid

import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from notiflow.topics import partition_for
from sources.fresh_start import source_group
from stack.services import start_flow

P = 4
REQUESTS = "notify.requests"
MARKER_TTL_S = 3


def _wait(cond, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def r(stack):
    client = redis.Redis.from_url(stack.redis_url)
    yield client
    client.close()


def _request(run: str, i: int, user: str) -> bytes:
    return orjson.dumps({"v": 1, "id": f"fs-{run}-{i}", "type": "test.fresh", "recipients": [user],
                         "channels": ["inapp"], "body": str(i),
                         "created_at": int(time.time() * 1000)})


def _badges(r, users) -> int:
    return sum(int(r.get(f"nf:badge:{u}") or 0) for u in users)


def test_a_lost_recovery_folder_resumes_requests_at_the_committed_offsets(stack, r, tmp_path):
    run = uuid.uuid4().hex[:6]
    users = [f"fs-{run}-{i}" for i in range(24)]  # every partition
    assert {partition_for(u, P) for u in users} == set(range(P))
    env = {**stack.env(), "NOTIFLOW_SENT_MARKER_TTL_S": str(MARKER_TTL_S),
           "NOTIFLOW_FRESH_START": "committed"}
    rec = tmp_path / "recovery"
    ends: dict[int, int] = {}

    def acked(err, msg):
        assert err is None, err
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    prod = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 2})

    def publish(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            u = users[i % len(users)]
            prod.produce(REQUESTS, _request(run, i, u), u.encode(),
                         partition=partition_for(u, P), on_delivery=acked)
        assert prod.flush(10) == 0

    n, m = 240, 48
    group = Consumer({"bootstrap.servers": stack.brokers, "group.id": source_group(REQUESTS),
                      "enable.auto.commit": False})
    flows = start_flow("main", env, recovery_dir=rec, snapshot_s=1, log_dir=tmp_path)
    try:
        publish(0, n)
        _wait(lambda: _badges(r, users) >= n, 90, f"{n} deliveries")

        def committed_to_the_end() -> bool:
            got = group.committed([TopicPartition(REQUESTS, p) for p in ends], timeout=10)
            return all(tp.offset >= ends[tp.partition] for tp in got)

        _wait(committed_to_the_end, 30, "the source group's offsets to reach what was read")
        sent_by = time.time()
        for f in flows:
            f.stop()
        shutil.rmtree(rec)  # the recovery folder is lost
        # the sent-markers of the first run are gone from here on: a replay would deliver
        _wait(lambda: time.time() >= sent_by + MARKER_TTL_S + 1, MARKER_TTL_S + 5,
              "the sent-markers' TTL to pass", every=0.1)
        flows = start_flow("main", env, recovery_dir=rec, snapshot_s=1, log_dir=tmp_path)
        publish(n, n + m)  # behind the old ones in every partition: delivered after them
        _wait(lambda: _badges(r, users) >= n + m, 90, f"{m} new deliveries")
        ids = [orjson.loads(e)["id"] for u in users for e in r.lrange(f"nf:inbox:{u}", 0, -1)]
    finally:
        for f in flows:
            f.stop()
        group.close()
    assert _badges(r, users) == n + m, "requests of the first run were delivered again"
    assert sorted(ids) == sorted(f"fs-{run}-{i}" for i in range(n + m))


def test_control_topics_ending_in_transaction_markers_hold_no_requests(stack, r, tmp_path):
    """A committed transaction leaves a marker at the end of settings[p]; an open one on
    devices[p] is invisible to the lane: neither may hold that partition's requests (the
    lane starts after the first and runs through the second)."""
    run = uuid.uuid4().hex[:6]
    user = f"fs-tx-{run}"
    p = partition_for(user, P)
    tx = Producer({"bootstrap.servers": stack.brokers, "transactional.id": f"fs-{run}"})
    tx.init_transactions(10)
    tx.begin_transaction()
    tx.produce("notify.settings", orjson.dumps({"v": 1, "user_id": user}), user.encode(),
               partition=p)
    tx.commit_transaction(10)  # settings[p] now ends in the commit marker
    plain = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 1})
    flows = start_flow("main", stack.env(), recovery_dir=tmp_path / "recovery", snapshot_s=1,
                       log_dir=tmp_path)
    try:
        plain.produce(REQUESTS, _request(run, 0, user), user.encode(), partition=p)
        assert plain.flush(10) == 0
        _wait(lambda: _badges(r, [user]) >= 1, 60, "the request behind a commit marker")
        tx.begin_transaction()  # left open while the next request goes through
        tx.produce("notify.devices", orjson.dumps({"v": 1, "user_id": user}),
                   f"{user}|d-{run}".encode(), partition=p)
        assert tx.flush(10) == 0
        plain.produce(REQUESTS, _request(run, 1, user), user.encode(), partition=p)
        assert plain.flush(10) == 0
        _wait(lambda: _badges(r, [user]) >= 2, 60, "the request beside an open transaction")
    finally:
        for f in flows:
            f.stop()
        tx.abort_transaction(10)
