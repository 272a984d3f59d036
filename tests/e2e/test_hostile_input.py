"""Issue 9's rule on a real stack: no single record, on any input topic, stops a flow.

Hostile records are interleaved with good ones on every input topic (requests, critical,
settings, devices, subscriptions, presence, retry), including the two poison pills that
used to crash-loop the bulk lane: a payload of 600 KB of double quotes (its rejected
record was 1.2 MB, over the producer's message size) and ``data`` nested 300 levels deep
(orjson raised in the in-app sink).  Then: each good record is delivered exactly once,
each bad one is on notify.rejected with its reason, and every flow process is the one
that started (never died).
"""

from __future__ import annotations

import hashlib
import time
import uuid

import msgspec
import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from notiflow.topics import partition_for
from schemas.retry import RetryEnvelope, encode_envelope
from schemas.task import DeliveryTask
from tests.e2e.test_pipeline import NOW_MS, P, accepted, put_user, receipts_for, send, uid
from tests.lanes import run_lanes


@pytest.fixture(scope="module")
def flows(stack, tmp_path_factory):
    yield from run_lanes(stack.env(), tmp_path_factory, ("main", "critical", "retry"), "hostile")


@pytest.fixture(scope="module")
def sandbox(stack):
    from sandbox.client import SandboxControl

    return SandboxControl(stack.sandbox_url)


def nested(depth: int) -> dict:
    d: dict = {"x": 1}
    for _ in range(depth - 1):
        d = {"x": d}
    return d


def request(user: str, nid: str, **kw) -> bytes:
    body = {"v": 1, "id": nid, "type": "social.comment", "recipients": [user], "body": "hi",
            "channels": ["inapp"], "created_at": NOW_MS(), **kw}
    return msgspec.json.encode(body)  # takes what orjson refuses to encode (300 levels)


def produce(producer, topic: str, user: str, key: bytes | None, value: bytes | None) -> None:
    producer.produce(f"notify.{topic}", value, key, partition=partition_for(user, P))


def inbox_ids(r: redis.Redis, user: str) -> list[str]:
    return [orjson.loads(e)["id"] for e in r.lrange(f"nf:inbox:{user}", 0, -1)]


def wait_for(what: str, cond, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"{what} not seen after {timeout}s")


def test_hostile_records_on_every_topic_never_stop_a_flow(stack, flows, producer, sandbox):
    pids = [f.pid for f in flows]
    r = redis.Redis.from_url(stack.redis_url)
    tag = uuid.uuid4().hex[:8]
    # bad records: (topic, user whose partition it goes to, key, value, reason prefix)
    bad: list[tuple[str, str, bytes | None, bytes | None, str]] = []

    # -- state topics first (the lanes read them before requests): good ones between bad
    email_user, push_user, follower = uid("hs-mail"), uid("hs-push"), uid("hs-fan")
    topic = f"hostile-{tag}"
    bad += [
        ("settings", email_user, email_user.encode(),
         orjson.dumps({"user_id": email_user, "phone": "+15551234567\n"}), "phone: "),
        ("settings", email_user, b"\xff\xfe" + tag.encode(), None, "key: not UTF-8"),
        ("devices", push_user, f"{push_user}:ipad".encode(), orjson.dumps(
            {"user_id": push_user, "token_id": "ipad\n", "platform": "apns",
             "token": "ab" * 32}), "token_id: "),
        ("devices", push_user, f"nocolon-{tag}".encode(), None,
         "key: must be 'user_id:token_id'"),
        ("subscriptions", follower, f"{follower}|fans:x".encode(),
         orjson.dumps({"user_id": follower, "target": "fans:x"}), "target: "),
        ("subscriptions", follower, f"garbage-{tag}".encode(), None,
         "key: must be 'user_id|target'"),
        ("presence", follower, follower.encode(),
         orjson.dumps({"user_id": follower, "seen_ms": 10**17}), "seen_ms: "),
        ("presence", follower, follower.encode(), b"\xff\xfe" + tag.encode(),
         "payload: not valid JSON"),
    ]
    for t, user, key, value, _ in bad[::2]:
        produce(producer, t, user, key, value)
    put_user(producer, email_user, email=f"{email_user}@example.com")
    put_user(producer, push_user, devices=[("iphone", "apns", "a9" * 32)])
    produce(producer, "subscriptions", follower, f"{follower}|topic:{topic}".encode(),
            orjson.dumps({"user_id": follower, "target": f"topic:{topic}"}))
    produce(producer, "presence", follower, follower.encode(),
            orjson.dumps({"user_id": follower, "seen_ms": NOW_MS()}))
    for t, user, key, value, _ in bad[1::2]:
        produce(producer, t, user, key, value)
    assert producer.flush(10) == 0

    # -- requests, critical and retry: good, poison, good, hostile, good
    inapp_user, crit_user, retry_user = uid("hs-in"), uid("hs-crit"), uid("hs-retry")
    good = {n: uid(f"hs-{n}") for n in ("in1", "in2", "in3", "crit", "mail", "push", "fan",
                                        "retry")}
    send(producer, inapp_user, good["in1"], channels=["inapp"])
    bad_requests = [
        ("requests", inapp_user, inapp_user.encode(), b'"' * 600_000,  # A1
         "payload: 600000 bytes is over the 16384-byte limit"),
        ("requests", inapp_user, inapp_user.encode(),
         request(inapp_user, "hs-big", body="x" * 17_000), "payload: "),
        ("requests", inapp_user, inapp_user.encode(),  # A2
         request(inapp_user, "hs-deep", data=nested(300)), "data.x.x"),
        ("requests", inapp_user, inapp_user.encode(),
         request("x\nvictim", "hs-victim"), "recipients[0]: 'x\\nvictim' is not a user id"),
        ("requests", inapp_user, inapp_user.encode(),
         request(inapp_user, "hs-nl", type="marketing.weekly\n"), "type: "),
        ("critical", crit_user, crit_user.encode(),
         request(crit_user, "hs-crit-deep", priority="critical", data=nested(300)), "data.x.x"),
        ("critical", crit_user, crit_user.encode(), b'{"id": "hs-crit-broken", ',
         "payload: not valid JSON"),
        ("retry", retry_user, retry_user.encode(), b"not an envelope " + tag.encode(),
         "payload: not valid JSON"),
        ("retry", retry_user, retry_user.encode(), encode_envelope(RetryEnvelope(
            DeliveryTask(f"hs-fax-{tag}", retry_user, "social.comment", "normal", "fax",
                         "redis", "inbox", "", None, "b", None, None, None, NOW_MS()),
            NOW_MS(), NOW_MS() + 60_000)), "task.provider: 'redis' does not serve"),
    ]
    bad += bad_requests
    for t, user, key, value, _ in bad_requests[:3]:
        produce(producer, t, user, key, value)
    send(producer, inapp_user, good["in2"], channels=["inapp"])
    for t, user, key, value, _ in bad_requests[3:]:
        produce(producer, t, user, key, value)
    send(producer, inapp_user, good["in3"], channels=["inapp"])
    send(producer, crit_user, good["crit"], topic="notify.critical", priority="critical",
         channels=["inapp"])
    send(producer, email_user, good["mail"], channels=["email"])
    send(producer, push_user, good["push"], channels=["push"])
    producer.produce("notify.requests", request("", good["fan"], recipients=[],
                                                audience={"kind": "topic", "id": topic}))
    produce(producer, "retry", retry_user, retry_user.encode(), encode_envelope(RetryEnvelope(
        DeliveryTask(good["retry"], retry_user, "social.comment", "normal", "inapp", "redis",
                     "inbox", "", "Hi", "b", None, None, None, NOW_MS()),
        NOW_MS(), NOW_MS() + 60_000)))
    assert producer.flush(10) == 0

    # -- each good record delivered exactly once (receipts first: the flows are done then)
    rows = receipts_for(stack, [good[n] for n in ("in1", "in2", "in3", "crit", "mail", "push",
                                                  "retry")], want=7)
    assert sorted((row[0], row[4]) for row in rows) == sorted(
        (good[n], "sent") for n in ("in1", "in2", "in3", "crit", "mail", "push", "retry"))
    assert inbox_ids(r, inapp_user) == [good["in3"], good["in2"], good["in1"]]
    assert inbox_ids(r, crit_user) == [good["crit"]]
    assert inbox_ids(r, retry_user) == [good["retry"]]
    assert len(accepted(sandbox, "sendgrid", good["mail"])) == 1
    # a rejected retry envelope that still names a notification and user: a failed receipt
    [fax] = receipts_for(stack, [f"hs-fax-{tag}"], want=1)
    assert fax[4] == "failed" and "does not serve" in fax[5], fax
    assert len(accepted(sandbox, "apns", good["push"])) == 1
    assert wait_for("the fan-out to the subscribed, present user",
                    lambda: inbox_ids(r, follower)) == [good["fan"]]

    # -- each bad record on notify.rejected with its reason
    want = {(t, key if value is None else hashlib.sha256(value).hexdigest()): reason
            for t, _u, key, value, reason in bad}
    c = Consumer({"bootstrap.servers": stack.brokers, "group.id": f"hostile-{tag}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("notify.rejected", p, 0) for p in range(P)])
    seen: dict[tuple, dict] = {}

    def read_rejected():
        for m in c.consume(1000, 0.5):
            if m.error():
                continue
            rej = orjson.loads(m.value())
            t = rej["source"]["topic"]
            k = (t, m.key() if rej["payload_sha256"] is None else rej["payload_sha256"])
            if k in want:
                seen[k] = rej
        return len(seen) == len(want)

    try:
        wait_for("every bad record on notify.rejected", read_rejected)
    finally:
        c.close()
    for k, reason in want.items():
        assert seen[k]["reason"].startswith(reason), (k, seen[k]["reason"])
    a1 = seen[("requests", hashlib.sha256(b'"' * 600_000).hexdigest())]
    assert a1["payload_bytes"] == 600_000 and len(a1["payload"]) == 1024

    # -- and no flow process ever died
    assert [f.pid for f in flows] == pids and all(f.alive for f in flows), [
        (f.name, f.returncode) for f in flows]
