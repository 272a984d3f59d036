"""The whole pipeline over real parts: Tansu, Redis, the provider sandbox, chDB via the loader.

Both lanes run as real ``python -m bytewax.run`` processes with recovery on.  Each test
uses its own users and notification ids, so they share one running stack.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import httpx
import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from loader.client import local_sql
from notiflow.topics import partition_for
from sandbox.client import SandboxControl
from schemas.task import PROVIDERS
from tests.lanes import run_lanes
from tests.ordering import settle

P = 4  # partitions: the stack fixture's default (Settings.partitions)
NOW_MS = lambda: int(time.time() * 1000)  # noqa: E731


@pytest.fixture(scope="module")
def flows(stack, tmp_path_factory):
    # fast retries so the retry and DLQ paths finish inside a test
    env = {**stack.env(), "NOTIFLOW_RETRY_BASE_S": "0.2", "NOTIFLOW_RETRY_CAP_S": "1",
           "NOTIFLOW_RETRY_DEADLINE_S": "4", "NOTIFLOW_BREAKER_OPEN_S": "2"}
    yield from run_lanes(env, tmp_path_factory, ("main", "critical", "retry"), "rec")


@pytest.fixture(scope="module")
def sandbox(stack):
    return SandboxControl(stack.sandbox_url)


def uid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def put_user(producer, user, *, devices=(), **settings):
    p = partition_for(user, P)
    producer.produce("notify.settings", orjson.dumps({"v": 1, "user_id": user, **settings}),
                     user.encode(), partition=p)
    for token_id, platform, token in devices:
        producer.produce("notify.devices", orjson.dumps({
            "v": 1, "user_id": user, "token_id": token_id, "platform": platform,
            "token": token, "active": True}), f"{user}:{token_id}".encode(), partition=p)
    # acknowledged before any request is published: the order the flow promises to keep
    # (Kafka orders nothing across partitions, not even from one producer)
    producer.flush(10)


def send(producer, user, nid, *, topic="notify.requests", raw: bytes | None = None, **fields):
    body = {"v": 1, "id": nid, "type": "social.comment", "recipients": [user],
            "title": "Hello", "body": f"body of {nid}", "created_at": NOW_MS(), **fields}
    producer.produce(topic, raw if raw is not None else orjson.dumps(body), user.encode(),
                     partition=partition_for(user, P))


def query(stack, sql: str) -> list[list]:
    return local_sql(stack.loader_socket, sql, timeout=10).rows


def receipts_for(stack, nids: list[str], want: int, timeout: float = 60, *, producer=None,
                 channels: tuple[str, ...] | None = None) -> list[tuple]:
    """Wait until at least ``want`` receipts of these notifications are in ClickHouse.  With
    ``producer``, then until a later marker request on every partition of both lanes is
    delivered on ``channels`` (default: those of the receipts), so a wrong extra receipt
    would be among the rows returned."""
    ids = ",".join(f"'{n}'" for n in nids)
    sql = (f"SELECT notification_id, channel, provider, target, outcome, reason FROM "
           f"notiflow.receipts WHERE notification_id IN ({ids}) ORDER BY notification_id, channel, target")
    deadline = time.time() + timeout
    rows: list = []
    while time.time() < deadline:
        rows = query(stack, sql)
        if len(rows) >= want:
            if producer is not None:
                settle(producer, stack, P, lanes=("main", "critical"),
                       channels=channels or tuple(sorted({r[1] for r in rows} & set(PROVIDERS)))
                       or ("inapp",))
            return [tuple(r) for r in query(stack, sql)]
        time.sleep(0.2)
    pytest.fail(f"only {len(rows)} of {want} receipts for {nids} after {timeout}s: {rows}")


def accepted(sandbox, provider: str, nid: str) -> list[dict]:
    return [m for m in sandbox.messages(provider) if m["nid"] == nid]


def test_pipeline_delivers_each_channel_once_with_receipts(stack, flows, producer, sandbox):
    user = uid("ann")
    put_user(producer, user, email=f"{user}@example.com", phone="+15551230001",
             devices=[("iphone", "apns", "a1" * 32), ("pixel", "fcm", "f1" * 40)])
    nid = uid("n-all")
    send(producer, user, nid, channels=["push", "email", "sms", "inapp"], priority="high")
    crit = uid("n-crit")
    send(producer, user, crit, topic="notify.critical", channels=["sms"], priority="critical",
         type="auth.code", title=None, body="Your code is 123456")
    producer.flush(10)

    rows = receipts_for(stack, [nid, crit], want=6, producer=producer)
    assert sorted((r[0], r[1], r[2], r[4]) for r in rows) == sorted([
        (nid, "email", "sendgrid", "sent"), (nid, "inapp", "redis", "sent"),
        (nid, "push", "apns", "sent"), (nid, "push", "fcm", "sent"),
        (nid, "sms", "twilio", "sent"), (crit, "sms", "twilio", "sent"),
    ])
    assert len(accepted(sandbox, "apns", nid)) == 1
    assert len(accepted(sandbox, "fcm", nid)) == 1
    assert [m["target"] for m in accepted(sandbox, "sendgrid", nid)] == [f"{user}@example.com"]
    assert [m["target"] for m in accepted(sandbox, "twilio", nid)] == ["+15551230001"]
    assert [m["body"] for m in accepted(sandbox, "twilio", crit)] == ["Your code is 123456"]

    r = redis.Redis.from_url(stack.redis_url)
    inbox = [orjson.loads(e) for e in r.lrange(f"nf:inbox:{user}", 0, -1)]
    assert [e["id"] for e in inbox] == [nid]
    assert inbox[0]["title"] == "Hello"
    assert int(r.get(f"nf:badge:{user}")) == 1


def test_pipeline_inapp_inbox_newest_first_badge_and_live(stack, flows, producer):
    user = uid("bob")
    r = redis.Redis.from_url(stack.redis_url)
    live = r.pubsub()
    live.subscribe(f"nf:live:{user}")
    assert live.get_message(timeout=5)["type"] == "subscribe"
    nids = [uid("n-in") for _ in range(3)]
    for n in nids:
        send(producer, user, n, channels=["inapp"])
    producer.flush(10)
    receipts_for(stack, nids, want=3, producer=producer)
    got = []
    deadline = time.time() + 10
    while len(got) < 3 and time.time() < deadline:
        m = live.get_message(timeout=1)
        if m and m["type"] == "message":
            got.append(orjson.loads(m["data"])["id"])
    live.close()
    assert got == nids
    assert [orjson.loads(e)["id"] for e in r.lrange(f"nf:inbox:{user}", 0, -1)] == nids[::-1]
    assert int(r.get(f"nf:badge:{user}")) == 3


def test_pipeline_suppresses_opted_out_and_disabled_channels(stack, flows, producer, sandbox):
    user = uid("cy")
    put_user(producer, user, phone="+15551230002", channels={"sms": False},
             opt_out_types=["marketing"])
    promo, code, ok = uid("n-promo"), uid("n-sms"), uid("n-ok")
    send(producer, user, promo, type="marketing.weekly", channels=["inapp"])
    send(producer, user, code, channels=["sms"])
    send(producer, user, ok, channels=["inapp"])
    producer.flush(10)
    rows = receipts_for(stack, [promo, code, ok], want=3, producer=producer)
    assert sorted((r[0], r[1], r[4], r[5]) for r in rows) == sorted([
        (promo, "inapp", "suppressed", "opted out of marketing"),
        (code, "sms", "suppressed", "sms turned off"),
        (ok, "inapp", "sent", ""),
    ])
    assert accepted(sandbox, "twilio", code) == []


def test_pipeline_deduplicates_a_repeated_request(stack, flows, producer, sandbox):
    user = uid("dee")
    put_user(producer, user, devices=[("iphone", "apns", "d1" * 32)])
    first, again = uid("n-like"), uid("n-like-again")
    what = {"actor": "eve", "object": "photo-7"}
    send(producer, user, first, type="social.like", channels=["push"], dedup=what)
    send(producer, user, first, type="social.like", channels=["push"], dedup=what)  # re-sent
    send(producer, user, again, type="social.like", channels=["push"], dedup=what)  # same event
    producer.flush(10)
    rows = receipts_for(stack, [first, again], want=3, producer=producer)
    assert sorted((r[0], r[4]) for r in rows) == sorted([
        (first, "sent"), (first, "duplicate"), (again, "duplicate")])
    assert len(accepted(sandbox, "apns", first)) == 1
    assert accepted(sandbox, "apns", again) == []


BAD = {
    "malformed": (b'{"id": "x", "type": ', "payload: not valid JSON"),
    "missing": (b'{"v":1,"id":"bad-missing","type":"a.b","body":"x","created_at":1}',
                "recipients: must name at least one user id"),
    "channel": (b'{"v":1,"id":"bad-chan","type":"a.b","body":"x","created_at":1,'
                b'"recipients":["u"],"channels":["pigeon"]}', "channels[0]: Invalid enum value"),
    "types": (b'{"v":1,"id":"bad-types","type":"a.b","body":"x","created_at":"yesterday",'
              b'"recipients":["u"]}', "created_at: Expected `int`, got `str`"),
    "oversized": (orjson.dumps({"v": 1, "id": "bad-big", "type": "a.b", "body": "x" * 70_000,
                                "created_at": 1, "recipients": ["u"]}), "payload: "),
}


def test_pipeline_rejects_bad_input_and_keeps_delivering(stack, flows, producer):
    user = uid("eve")
    before, after = uid("n-before"), uid("n-after")
    send(producer, user, before, channels=["inapp"])
    for raw, _ in BAD.values():
        send(producer, user, "ignored", raw=raw)
    send(producer, user, after, channels=["inapp"])
    producer.flush(10)
    rows = receipts_for(stack, [before, after], want=2, producer=producer)
    assert sorted((r[0], r[4]) for r in rows) == sorted([(before, "sent"), (after, "sent")])

    c = Consumer({"bootstrap.servers": stack.brokers, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition("notify.rejected", p, 0) for p in range(P)])
    seen: dict[str, dict] = {}
    deadline = time.time() + 30
    # a rejected record carries an excerpt of the payload, its size and its sha256
    payloads = {hashlib.sha256(raw).hexdigest(): k for k, (raw, _) in BAD.items()}
    while time.time() < deadline and len(seen) < len(BAD):
        for m in c.consume(500, 0.5):
            if m.error():
                continue
            rej = orjson.loads(m.value())
            if rej.get("payload_sha256") in payloads:
                seen[payloads[rej["payload_sha256"]]] = rej
    c.close()
    assert set(seen) == set(BAD)
    for k, (_raw, reason) in BAD.items():
        assert seen[k]["reason"].startswith(reason), (k, seen[k]["reason"])
        assert seen[k]["source"]["topic"] == "requests"
    assert "over the" in seen["oversized"]["reason"]
    bad_ids = query(stack, "SELECT count() FROM notiflow.receipts WHERE outcome = 'rejected' "
                           "AND notification_id IN ('bad-missing','bad-chan','bad-types','bad-big')")
    assert bad_ids[0][0] >= 4


def test_pipeline_invalid_token_fails_and_deactivates_device(stack, flows, producer, sandbox):
    user = uid("fay")
    put_user(producer, user, devices=[("old", "apns", "gone" + "0" * 60),
                                      ("new", "fcm", "f2" * 40)])
    first, second = uid("n-tok1"), uid("n-tok2")
    send(producer, user, first, channels=["push"])
    producer.flush(10)
    rows = receipts_for(stack, [first], want=2, producer=producer)
    assert sorted((r[2], r[3], r[4]) for r in rows) == [("apns", "old", "failed"),
                                                        ("fcm", "new", "sent")]
    assert "Unregistered" in next(r[5] for r in rows if r[3] == "old")
    # the sink published the device as inactive: the next push skips it
    deadline = time.time() + 20
    while time.time() < deadline:
        send(producer, user, second, channels=["push"])
        producer.flush(10)
        rows = receipts_for(stack, [second], want=1, producer=producer)
        if all(r[3] == "new" for r in rows):
            break
        second = uid("n-tok2")
        time.sleep(0.5)
    assert [(r[3], r[4]) for r in rows] == [("new", "sent")]


def test_pipeline_permanent_provider_error_is_a_failed_receipt(stack, flows, producer, sandbox):
    user = uid("gus")
    put_user(producer, user, phone="+15005550001")  # Twilio's magic invalid number
    nid = uid("n-badnum")
    send(producer, user, nid, channels=["sms"])
    producer.flush(10)
    rows = receipts_for(stack, [nid], want=1, producer=producer)
    assert rows[0][4] == "failed" and "21211" in rows[0][5]
    assert accepted(sandbox, "twilio", nid) == []


def test_pipeline_retries_only_the_failed_sends_then_delivers(stack, flows, producer, sandbox):
    users = [uid("hal") for _ in range(6)]
    for i, u in enumerate(users):
        put_user(producer, u, devices=[("iphone", "apns", f"{i:02d}" * 32)])
    nids = [uid("n-flaky") for _ in users]
    sandbox.faults("apns", status=503, rate=1.0, count=2, retry_after=0)
    try:
        for u, n in zip(users, nids, strict=True):
            send(producer, u, n, channels=["push"])
        producer.flush(10)
        rows = receipts_for(stack, nids, want=len(nids), timeout=60, producer=producer)
    finally:
        sandbox.clear_faults()
    assert {r[4] for r in rows} == {"sent"}
    for n in nids:  # each accepted exactly once, also the ones that failed first
        assert len(accepted(sandbox, "apns", n)) == 1
    attempts = query(stack, "SELECT max(attempt) FROM notiflow.receipts WHERE notification_id IN ("
                     + ",".join(f"'{n}'" for n in nids) + ")")
    assert attempts[0][0] >= 2  # some were retried
    assert sandbox.stats()["apns"]["by_status"].get("503", 0) >= 2


def test_pipeline_dead_letters_after_deadline_and_replays(stack, flows, producer, sandbox):
    from stack.replay_dlq import replay

    user = uid("ida")
    put_user(producer, user, devices=[("pixel", "fcm", "f9" * 40)])
    nid = uid("n-dead")
    sandbox.faults("fcm", status=503, rate=1.0)
    try:
        send(producer, user, nid, channels=["push"])
        producer.flush(10)
        # the retry deadline is 4 s in this module
        rows = receipts_for(stack, [nid], want=1, timeout=60, producer=producer)
    finally:
        sandbox.clear_faults()
    assert rows[0][4] == "dead_lettered" and "fcm" in rows[0][5]
    c = Consumer({"bootstrap.servers": stack.brokers, "group.id": "t-dlq"})
    c.assign([TopicPartition("notify.dlq", p, 0) for p in range(P)])
    letters = []
    deadline = time.time() + 10
    while time.time() < deadline and not letters:
        letters = [orjson.loads(m.value()) for m in c.consume(500, 0.5)
                   if not m.error() and orjson.loads(m.value())["task"][0] == nid]
    c.close()
    from schemas.task import DeliveryTask

    # DeliveryTask.errors (the task is array_like: fields by position): every attempt's error
    errors = letters[0]["task"][DeliveryTask.__struct_fields__.index("errors")]
    assert len(errors) >= 2 and "fcm 503" in errors[0]
    # the flows log JSON lines; the dead letter is findable by its notification id
    logged = [orjson.loads(line) for f in flows for line in f.output().splitlines()
              if line.startswith("{") and nid in line]
    assert any(e["event"] == "dead-lettered" and e["notification_id"] == nid
               and e["channel"] == "push" for e in logged), logged
    assert replay(stack.brokers) >= 1
    rows = receipts_for(stack, [nid], want=2, timeout=60, producer=producer)
    assert sorted(r[4] for r in rows) == ["dead_lettered", "sent"], query(
        stack, f"SELECT outcome, attempt, event_ms, reason FROM notiflow.receipts "
               f"WHERE notification_id = '{nid}' ORDER BY event_ms")
    assert len(accepted(sandbox, "fcm", nid)) == 1
    assert replay(stack.brokers) == 0  # already replayed letters stay replayed


def test_pipeline_critical_push_failure_escalates_to_sms(stack, flows, producer, sandbox):
    with_phone, no_device = uid("jo"), uid("kim")
    put_user(producer, with_phone, phone="+15551230003",
             devices=[("old", "apns", "bad" + "0" * 61)])  # APNs says BadDeviceToken
    put_user(producer, no_device, phone="+15551230004")
    a, b = uid("n-esc"), uid("n-esc")
    send(producer, with_phone, a, topic="notify.critical", priority="critical",
         type="ride.arriving", channels=["push"])
    send(producer, no_device, b, topic="notify.critical", priority="critical",
         type="auth.code", channels=["push"])
    producer.flush(10)
    rows = receipts_for(stack, [a, b, f"{a}~sms"], want=4, producer=producer)
    got = sorted((r[0], r[1], r[4]) for r in rows)
    assert got == sorted([(a, "push", "failed"), (f"{a}~sms", "sms", "sent"),
                          (b, "push", "no_target"), (b, "sms", "sent")])
    assert [m["target"] for m in accepted(sandbox, "twilio", f"{a}~sms")] == ["+15551230003"]
    assert [m["target"] for m in accepted(sandbox, "twilio", b)] == ["+15551230004"]


def test_pipeline_email_fails_over_and_breaker_opens_then_closes(stack, flows, producer,
                                                                  sandbox):
    user = uid("lou")
    put_user(producer, user, email=f"{user}@example.com")
    producer.flush(10)
    before = sandbox.stats()["sendgrid"]["by_status"].get("503", 0)
    sandbox.faults("sendgrid", status=503, rate=1.0)
    nids = []
    try:
        for _ in range(7):  # one batch each: the breaker counts failing batches
            nids.append(uid("n-fo"))
            send(producer, user, nids[-1], channels=["email"])
            producer.flush(10)
            receipts_for(stack, [nids[-1]], want=1)
        tried_sendgrid = sandbox.stats()["sendgrid"]["by_status"].get("503", 0) - before
    finally:
        sandbox.clear_faults()
    rows = receipts_for(stack, nids, want=len(nids), producer=producer)
    assert {(r[2], r[4]) for r in rows} == {("ses", "sent")}  # SES took over, once each
    for n in nids:
        assert len(accepted(sandbox, "ses", n)) == 1 and accepted(sandbox, "sendgrid", n) == []
    # after 5 failing batches the breaker stopped calling it (one half-open probe may fit
    # in the run, as open_s is 2 s here)
    assert 5 <= tried_sendgrid < len(nids)
    time.sleep(2.5)  # open_s = 2 in this module: the next batch is the half-open probe
    probe = uid("n-probe")
    send(producer, user, probe, channels=["email"])
    producer.flush(10)
    rows = receipts_for(stack, [probe], want=1, producer=producer)
    assert (rows[0][2], rows[0][4]) == ("sendgrid", "sent")
    # the breaker's state is visible: logs and the flow's Prometheus metrics
    main = next(f for f in flows if f.name == "flow-main-0")
    metrics = httpx.get(main.url, timeout=5).text
    assert 'notiflow_breaker_state{provider="sendgrid"} 0.0' in metrics
    assert 'notiflow_deliveries_total{channel="email",outcome="sent",provider="ses"}' in metrics
    assert "circuit breaker sendgrid: closed -> open" in main.log_path.read_text()
