"""Scale-out: the same workload gives the same outcomes on 1 worker, 4 workers, 2 x 2.

Why: state is partitioned by user id (one Kafka partition = one source partition = one
keyed state), so how many Bytewax workers or processes share the partitions must not change
what happens to any notification.  Each configuration gets a fresh stack (Tansu, Redis,
sandbox, loader/chDB) so dedup state and inboxes start empty; the workload is deterministic
(settings and devices first, then requests in one fixed order per partition).  Compared:
the multiset of (notification_id, user_id, channel, outcome) receipts, and every in-app
inbox (entries as a sorted list: a multi-recipient request is split and re-published to each
recipient's partition, so where its copy lands among that user's direct requests depends on
timing, with any worker count) plus the badge.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import orjson
import pytest
import redis
from confluent_kafka import Producer

from loader.client import local_sql
from notiflow.topics import partition_for

P = 8  # partitions of the user-keyed topics: >= the most workers tried (4)
USERS = [f"so-u{i:03d}" for i in range(48)]
CREATED = 1_764_050_000_000  # fixed: inbox entries carry created_ms
GROUPS = {f"so-m{k}": [USERS[(k * 5 + j * 7) % len(USERS)] for j in range(5)] for k in range(12)}


@dataclass
class Outcome:
    receipts: Counter
    inboxes: dict[str, tuple[list[bytes], int]]


def _settings(i: int, user: str) -> dict:
    s: dict = {"v": 1, "user_id": user, "email": f"{user}@example.com"}
    if i % 2 == 0:
        s["phone"] = f"+1555{i:07d}"
    if i % 5 == 0:
        s["channels"] = {"sms": False}
    if i % 7 == 0:
        s["opt_out_types"] = ["marketing"]
    return s


def _request(nid: str, recipients: list[str], channels: list[str], type_: str = "app.update",
             **extra) -> bytes:
    return orjson.dumps({"v": 1, "id": nid, "type": type_, "recipients": recipients,
                         "channels": channels, "title": "T", "body": f"body {nid}",
                         "created_at": CREATED, **extra})


def publish_workload(brokers: str) -> int:
    """Users, then requests (bulk and critical); returns how many records were published."""
    prod = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    n = 0

    def put(topic: str, key: str, value: bytes, user: str) -> None:
        nonlocal n
        prod.produce(topic, value, key.encode(), partition=partition_for(user, P))
        n += 1

    for i, u in enumerate(USERS):
        put("notify.settings", u, orjson.dumps(_settings(i, u)), u)
        if i % 3 != 2:  # a third of the users have no device
            platform = "apns" if i % 3 == 0 else "fcm"
            put("notify.devices", f"{u}:phone", orjson.dumps({
                "v": 1, "user_id": u, "token_id": "phone", "platform": platform,
                "token": f"{i + 1:064x}", "active": True}), u)
    # acknowledged before any request: the order the flow promises to keep
    assert prod.flush(30) == 0

    for i, u in enumerate(USERS):
        put("notify.requests", u, _request(f"so-a{i}", [u], ["inapp", "push"]), u)
        put("notify.requests", u, _request(f"so-b{i}", [u], ["inapp", "email"],
                                           "marketing.weekly"), u)
        put("notify.requests", u, _request(f"so-c{i}", [u], ["sms"]), u)
        what = {"actor": f"actor{i % 4}", "object": f"post{i}"}
        put("notify.requests", u, _request(f"so-d{i}", [u], ["inapp"], dedup=what), u)
        put("notify.requests", u, _request(f"so-d{i}", [u], ["inapp"], dedup=what), u)  # again
        put("notify.requests", u, _request(f"so-e{i}", [u], ["inapp"], dedup=what), u)  # same event
        put("notify.requests", u, _request(f"so-f{i}", [u], [], "order.shipped"), u)  # defaults
    for k, group in GROUPS.items():  # several recipients each, spread over partitions
        put("notify.requests", group[0], _request(k, group, ["inapp", "push"]), group[0])
    for k, raw in enumerate((b'{"v":1,"id":"so-bad0","type":', b'{"v":1,"id":"so-bad1",'
                             b'"type":"a.b","body":"x","created_at":1}',
                             b'{"v":1,"id":"so-bad2","type":"a.b","created_at":1,'
                             b'"recipients":["so-u001"],"channels":["fax"]}')):
        put("notify.requests", f"bad{k}", raw, USERS[k])
    for i, u in enumerate(USERS[:16]):  # critical lane: push, escalated to SMS without a device
        put("notify.critical", u, _request(f"so-k{i}", [u], ["push"], "auth.code",
                                           priority="critical"), u)
    assert prod.flush(30) == 0
    return n


def query(socket: str, sql: str) -> list[list]:
    return local_sql(socket, sql, timeout=30).rows


def wait_receipts(socket: str, want: int | None, timeout: float = 120) -> None:
    """Until ``want`` receipts (when known), then until the count holds still for 3 s."""
    sql = "SELECT count() FROM notiflow.receipts WHERE startsWith(notification_id, 'so-')"
    deadline = time.time() + timeout
    last, since = -1, time.time()
    while time.time() < deadline:
        got = query(socket, sql)[0][0]
        if got != last:
            last, since = got, time.time()
        elif got > 0 and (want is None or got >= want) and time.time() - since >= 3:
            return
        time.sleep(0.3)


def run_workload(tmp_path, processes: int, workers: int, want: int | None) -> Outcome:
    from stack.env import start_stack
    from stack.services import start_flow

    stack = start_stack(workdir=tmp_path, with_flows=False)
    flows = []
    try:
        env = stack.env()
        publish_workload(stack.brokers)
        for lane, procs, w in (("main", processes, workers), ("critical", processes, workers),
                               ("retry", 1, 1)):
            flows += start_flow(lane, env, processes=procs, workers=w,
                                recovery_dir=tmp_path / f"rec-{lane}", log_dir=tmp_path / "logs")
        wait_receipts(stack.loader_socket, want)
        rows = query(stack.loader_socket, "SELECT notification_id, user_id, channel, outcome "
                     "FROM notiflow.receipts WHERE startsWith(notification_id, 'so-')")
        r = redis.Redis.from_url(stack.redis_url)
        inboxes = {u: (sorted(r.lrange(f"nf:inbox:{u}", 0, -1)), int(r.get(f"nf:badge:{u}") or 0))
                   for u in USERS}
        for f in flows:
            assert f.alive, f"{f.name} died: {f.log_tail()}"
        return Outcome(Counter(tuple(x) for x in rows), inboxes)
    finally:
        for f in reversed(flows):
            f.stop()
        stack.stop()


@pytest.fixture(scope="module")
def partitions_env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOTIFLOW_PARTITIONS", str(P))
        yield


@pytest.fixture(scope="module")
def one_worker(partitions_env, tmp_path_factory) -> Outcome:
    out = run_workload(tmp_path_factory.mktemp("scale-1w"), 1, 1, None)
    outcomes = Counter(o for (_n, _u, _c, o) in out.receipts.elements())
    # the workload exercises what it claims to, so "equal" means something
    for o in ("sent", "suppressed", "duplicate", "rejected", "no_target"):
        assert outcomes[o] > 0, (o, outcomes)
    assert sum(len(v[0]) for v in out.inboxes.values()) > len(USERS)
    # every recipient of a multi-recipient request gets it (a sent-marker keyed without the
    # user once made all but the first a "duplicate", in an order that depended on workers)
    for nid, group in GROUPS.items():
        for u in group:
            assert out.receipts[(nid, u, "inapp", "sent")] == 1, (nid, u)
    return out


@pytest.mark.parametrize(("processes", "workers"), [(1, 4), (2, 2)],
                         ids=["1x4-workers", "2x2-processes"])
def test_scale_out_same_outcomes_as_one_worker(one_worker, partitions_env, tmp_path,
                                               processes, workers):
    want = sum(one_worker.receipts.values())
    got = run_workload(tmp_path, processes, workers, want)
    missing = one_worker.receipts - got.receipts
    extra = got.receipts - one_worker.receipts
    assert not missing and not extra, f"missing {dict(missing)}; extra {dict(extra)}"
    diff = [u for u in USERS if got.inboxes[u] != one_worker.inboxes[u]]
    assert not diff, {u: (one_worker.inboxes[u], got.inboxes[u]) for u in diff[:3]}


RECOVERY_N = 4000


def test_scale_out_kill9_across_processes_and_rescale_delivers_once(partitions_env, tmp_path):
    """2 processes x 2 workers, kill -9 of every process mid-run, resumed as 1 x 4, killed
    again, resumed as 2 x 1: every in-app notification lands exactly once.  The snapshots
    are keyed by partition, so any shape can resume them (the partition count stays)."""
    from stack.env import start_stack
    from stack.services import start_flow

    stack = start_stack(workdir=tmp_path, with_flows=False)
    users = [f"so-r{i:03d}" for i in range(200)]
    rec = tmp_path / "rec-main"
    shapes = [(2, 2), (1, 4), (2, 1)]
    flows: list = []
    try:
        prod = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 5})

        def start(shape: tuple[int, int]) -> list:
            return start_flow("main", stack.env(), processes=shape[0], workers=shape[1],
                              recovery_dir=rec, snapshot_s=1, log_dir=tmp_path / "logs")

        flows = start(shapes[0])
        for i in range(RECOVERY_N):
            u = users[i % len(users)]
            prod.produce("notify.requests", _request(f"so-rec{i}", [u], ["inapp"]), u.encode(),
                         partition=partition_for(u, P))
            if i % 1500 == 1499:  # crash every process of the lane, resume in another shape
                prod.flush(10)
                time.sleep(2)
                for f in flows:
                    f.kill9()
                flows = start(shapes[(i // 1500) + 1])
        prod.flush(10)
        r = redis.Redis.from_url(stack.redis_url)
        deadline = time.time() + 90
        while time.time() < deadline:
            if sum(int(r.get(f"nf:badge:{u}") or 0) for u in users) >= RECOVERY_N:
                break
            time.sleep(0.5)
        time.sleep(2)  # anything replayed late would show up as an extra entry now
        ids = [orjson.loads(e)["id"] for u in users for e in r.lrange(f"nf:inbox:{u}", 0, -1)]
        assert [f.alive for f in flows] == [True, True], [f.log_tail() for f in flows]
    finally:
        for f in reversed(flows):
            f.stop()
        stack.stop()
    assert len(ids) == RECOVERY_N, f"{len(ids)} inbox entries for {RECOVERY_N} notifications"
    assert len(set(ids)) == RECOVERY_N, f"{len(ids) - len(set(ids))} duplicates"
