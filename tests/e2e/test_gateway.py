"""The HTTP gateway as a real uvicorn process against real Kafka (Tansu) and Redis.

What a producer sees (202 + id, 401/403/413/422/429 with reasons, idempotency, batches)
and what lands in Kafka; then the spool: Kafka unreachable at start, Kafka restarted
under a running gateway, and the gateway killed -9 with a full spool.  Nothing accepted
may be lost, and per partition the first copies keep the order of the 202s.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid

import httpx
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from notiflow.config import Settings
from notiflow.topics import partition_for
from schemas.request import decode_request
from stack.services import ROOT, free_port, start_gateway, start_kafka
from stack.topics import create_topics

P = 4  # Settings.partitions


def make_key(redis_url: str, name: str, *scopes: str, rate: float = 1000, burst: int = 1000,
             audiences: tuple[str, ...] | list[str] = ()) -> str:
    """A key through the CLI producers use (`python -m gateway.api_keys create`)."""
    args = [sys.executable, "-m", "gateway.api_keys", "--redis-url", redis_url, "create", name,
            "--rate", str(rate), "--burst", str(burst)]
    for s in scopes:
        args += ["--scope", s]
    for a in audiences:
        args += ["--audience", a]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=30, check=True)
    return out.stdout.strip()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def note(user: str, **kw) -> dict:
    return {"type": "social.like", "recipients": [user], "title": "t", "body": "b", **kw}


def read_topic(brokers: str, topic: str, partition: int, want: int, timeout: float = 30.0
               ) -> list[tuple[bytes | None, dict]]:
    """Every record of one partition from the start, once at least ``want`` are there."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": "g1-tests",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    out: list[tuple[bytes | None, dict]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < want:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                out.append((m.key(), orjson.loads(m.value())))
        return out
    finally:
        c.close()


def first_copies(values: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v["id"], None)
    return list(seen)


@pytest.fixture(scope="module")
def gateway(stack, tmp_path_factory):
    env = {**stack.env(), "NOTIFLOW_GATEWAY_SPOOL_DIR": str(tmp_path_factory.mktemp("spool"))}
    g = start_gateway(env, stack.workdir / "logs")
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def key(stack) -> str:
    return make_key(stack.redis_url, "g1-social", "social.*")


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c


def uid() -> str:
    return f"gw-{uuid.uuid4().hex[:8]}"


# --- what a producer sees ------------------------------------------------------------------

def test_accepted_request_is_in_kafka_on_its_users_partition(stack, client, key):
    user = uid()
    r = client.post("/v1/notifications", json=note(user, id="n-" + user), headers=auth(key))
    assert r.status_code == 202, r.text
    assert r.json() == {"id": "n-" + user, "via": "kafka"}
    got = [v for k, v in read_topic(stack.brokers, "notify.requests", partition_for(user, P), 10**6,
                                    timeout=3) if k == user.encode()]
    assert [v["id"] for v in got] == ["n-" + user]
    req = decode_request(orjson.dumps(got[0]))  # the flow's own decoder accepts it
    assert req.recipients == [user] and req.created_at > 0


def test_gateway_fills_id_and_critical_goes_to_its_own_topic(stack, client, key):
    user = uid()
    r = client.post("/v1/notifications", json=note(user, priority="critical"), headers=auth(key))
    assert r.status_code == 202, r.text
    nid = r.json()["id"]
    assert nid
    got = read_topic(stack.brokers, "notify.critical", partition_for(user, P), 10**6, timeout=3)
    assert nid in [v["id"] for _k, v in got]


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing API key"),
    ({"Authorization": "Bearer nfk_not-a-real-key"}, "unknown or revoked"),
    ({"X-API-Key": "hunter2"}, "not an API key"),
])
def test_bad_credentials_get_401_with_a_reason(client, headers, reason):
    r = client.post("/v1/notifications", json=note("u1"), headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized" and reason in r.json()["reason"]


def test_a_type_outside_the_keys_scopes_gets_403(client, key):
    r = client.post("/v1/notifications", json=note("u1", type="billing.invoice"), headers=auth(key))
    assert r.status_code == 403
    assert r.json()["reason"].startswith("type: key 'g1-social' may not send 'billing.invoice'")


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"{not json", 400, "payload: not valid JSON"),
    (b"", 400, "payload: empty body"),
    (b"[1, 2]", 422, "payload: expected a JSON object"),
    (orjson.dumps(note("u1", recipients=[])), 422, "recipients: must name at least one"),
    (orjson.dumps(note("u1", channels=["fax"])), 422, "channels[0]: Invalid enum value 'fax'"),
    (orjson.dumps(note("u1", colour="red")), 422, "colour: unknown field"),
    (orjson.dumps(note("u1", body="x" * 20_000)), 413, "over the 16384-byte limit"),
])
def test_bad_bodies_get_4xx_naming_the_field(client, key, body, status, reason):
    r = client.post("/v1/notifications", content=body,
                    headers={**auth(key), "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert reason in r.json()["reason"]


def test_per_key_rate_limit_answers_429_with_retry_after(stack, client):
    slow = make_key(stack.redis_url, "g1-slow", "*", rate=0.5, burst=2)
    codes = [client.post("/v1/notifications", json=note(uid()), headers=auth(slow)).status_code
             for _ in range(3)]
    assert codes[:2] == [202, 202] and codes[2] == 429
    r = client.post("/v1/notifications", json=note(uid()), headers=auth(slow))
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1 and "rate: key 'g1-slow'" in r.json()["reason"]


def test_rate_is_charged_per_recipient_not_per_request(stack, client):
    """Before: one request to any number of recipients cost one token."""
    k = make_key(stack.redis_url, "g1-fanny", "*", rate=0.1, burst=10)
    ten = client.post("/v1/notifications", json=note(uid(), recipients=[uid() for _ in range(10)]),
                      headers=auth(k))
    assert ten.status_code == 202, ten.text
    one_more = client.post("/v1/notifications", json=note(uid()), headers=auth(k))
    assert one_more.status_code == 429 and "notifications/s" in one_more.json()["reason"]


def test_a_request_costing_more_than_the_burst_is_413(stack, client):
    k = make_key(stack.redis_url, "g1-small", "*", rate=100, burst=10)
    batch = {"requests": [note(uid(), recipients=[uid() for _ in range(6)]) for _ in range(2)]}
    r = client.post("/v1/notifications/batch", json=batch, headers=auth(k))
    assert r.status_code == 413 and "costs 12 notifications" in r.json()["reason"], r.text
    assert client.post("/v1/notifications", json=note(uid()), headers=auth(k)).status_code == 202


def test_audiences_need_a_grant_on_the_key(stack, client):
    """Before: any key with the type's scope could address any audience."""
    topic = {"type": "social.post", "audience": {"kind": "topic", "id": "sports"}, "body": "b"}
    plain = make_key(stack.redis_url, "g1-plain", "social.*")
    r = client.post("/v1/notifications", json=topic, headers=auth(plain))
    assert r.status_code == 403 and r.json()["reason"].startswith("audience: "), r.text
    granted = make_key(stack.redis_url, "g1-sports", "social.*", audiences=["topic:sports"])
    assert client.post("/v1/notifications", json=topic, headers=auth(granted)).status_code == 202
    other = {**topic, "audience": {"kind": "topic", "id": "news"}}
    assert client.post("/v1/notifications", json=other, headers=auth(granted)).status_code == 403


@pytest.mark.parametrize(("field", "value"), [
    ("recipients", ["x\nvictim"]),  # batch live mode splits lines: it reached victim's stream
    ("recipients", ["a b"]),
    ("type", "social.like\n"),  # matched no exact opt-out any more
])
def test_ids_and_types_are_validated_whole(client, key, field, value):
    r = client.post("/v1/notifications", json=note("u1", **{field: value}), headers=auth(key))
    assert r.status_code == 422, r.text
    assert r.json()["reason"].startswith(field), r.text


def test_same_idempotency_key_same_id_and_dedup_parts(stack, client, key):
    user = uid()
    h = {**auth(key), "Idempotency-Key": f"order-{user}"}
    a = client.post("/v1/notifications", json=note(user), headers=h)
    b = client.post("/v1/notifications", json=note(user, id="another-id"), headers=h)
    other = client.post("/v1/notifications", json=note(user), headers=auth(key))
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] == b.json()["id"] != other.json()["id"]
    got = [v for k, v in read_topic(stack.brokers, "notify.requests", partition_for(user, P),
                                    10**6, timeout=3) if k == user.encode()]
    same = [v for v in got if v["id"] == a.json()["id"]]
    assert len(same) == 2  # both produced; the flow's dedup drops the second
    # digests of the key's name and the Idempotency-Key (always within the flow's limits)
    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    assert same[0]["dedup"] == same[1]["dedup"] == {
        "actor": f"key:{digest('g1-social')}", "object": f"idem:{digest(f'order-{user}')}"}


def test_batch_of_1000_accepted_and_bad_items_reported_by_index(stack, client, key):
    user = uid()
    items = [note(user, id=f"{user}-{i}") for i in range(999)] + [note(user, recipients=[])]
    r = client.post("/v1/notifications/batch", json={"requests": items}, headers=auth(key))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 999 and body["rejected"] == 1
    assert body["results"][999]["index"] == 999
    assert body["results"][999]["reason"].startswith("recipients:")
    got = [v["id"] for k, v in read_topic(stack.brokers, "notify.requests",
                                          partition_for(user, P), 10**6, timeout=5)
           if k == user.encode()]
    assert got == [f"{user}-{i}" for i in range(999)]  # all there, in order

    too_many = client.post("/v1/notifications/batch", json={"requests": items + [note(user)]},
                           headers=auth(key))
    assert too_many.status_code == 413 and "batch limit of 1000" in too_many.json()["reason"]
    none_ok = client.post("/v1/notifications/batch", json={"requests": [{}]}, headers=auth(key))
    assert none_ok.status_code == 422 and none_ok.json()["accepted"] == 0


def test_openapi_and_metrics(client, key):
    spec = client.get("/openapi.json").json()
    assert "/v1/notifications" in spec["paths"] and "GatewayRequest" in spec["components"]["schemas"]
    text = client.get("/metrics").text
    assert 'notiflow_gateway_accepted_total{lane="bulk",via="kafka"}' in text
    assert "notiflow_gateway_rejected_total" in text


# --- the spool: Kafka away, then back ------------------------------------------------------

def spool_env(stack, brokers: str, spool_dir) -> dict[str, str]:
    return {**stack.env(), "KAFKA_BROKERS": brokers, "NOTIFLOW_GATEWAY_SPOOL_DIR": str(spool_dir),
            "NOTIFLOW_GATEWAY_KAFKA_TIMEOUT_MS": "1500"}


def post_all(url: str, key: str, user: str, ids: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        for nid in ids:
            r = c.post("/v1/notifications", json=note(user, id=nid), headers=auth(key))
            assert r.status_code == 202, r.text


def wait_ids(brokers: str, user: str, want: list[str], timeout: float = 60) -> list[str]:
    got = read_topic(brokers, "notify.requests", partition_for(user, P), len(want), timeout)
    return first_copies([v for k, v in got if k == user.encode()])


def test_kafka_unreachable_at_start_then_back(stack, key, tmp_path):
    port = free_port()
    g = start_gateway(spool_env(stack, f"127.0.0.1:{port}", tmp_path / "spool"),
                      tmp_path / "logs")
    kafka = None
    try:
        user = uid()
        ids = [f"{user}-{i}" for i in range(40)]
        post_all(g.url, key, user, ids)
        assert httpx.get(f"{g.url}/healthz").json()["spool_pending"] == len(ids)
        kafka = start_kafka(tmp_path / "logs", port=port)
        create_topics(kafka.url, Settings())
        assert wait_ids(kafka.url, user, ids) == ids
        deadline = time.monotonic() + 30
        while httpx.get(f"{g.url}/healthz").json() != {"ok": True, "kafka": "up", "spool_pending": 0}:
            assert time.monotonic() < deadline, "spool never drained"
            time.sleep(0.2)
        more = [f"{user}-late-{i}" for i in range(5)]  # and straight to Kafka again
        post_all(g.url, key, user, more)
        assert wait_ids(kafka.url, user, ids + more) == ids + more
    finally:
        g.stop()
        if kafka is not None:
            kafka.stop()


def test_kafka_restarted_under_a_running_gateway(stack, key, tmp_path):
    kafka = start_kafka(tmp_path / "logs")
    create_topics(kafka.url, Settings())
    port = int(kafka.url.rsplit(":", 1)[1])
    g = start_gateway(spool_env(stack, kafka.url, tmp_path / "spool"), tmp_path / "logs")
    try:
        user = uid()
        post_all(g.url, key, user, [f"{user}-before"])
        kafka.stop()  # memory-only Tansu: what it held is gone with it
        during = [f"{user}-during-{i}" for i in range(20)]
        post_all(g.url, key, user, during)
        kafka = start_kafka(tmp_path / "logs", port=port)
        create_topics(kafka.url, Settings())
        after = [f"{user}-after-{i}" for i in range(5)]
        post_all(g.url, key, user, after)
        assert wait_ids(kafka.url, user, during + after) == during + after
    finally:
        g.stop()
        kafka.stop()


def test_gateway_killed_with_a_full_spool_loses_nothing(stack, key, tmp_path):
    port = free_port()
    env = spool_env(stack, f"127.0.0.1:{port}", tmp_path / "spool")
    g = start_gateway(env, tmp_path / "logs")
    kafka = None
    try:
        user = uid()
        first = [f"{user}-a-{i}" for i in range(30)]
        post_all(g.url, key, user, first)
        g.kill9()
        g = start_gateway(env, tmp_path / "logs")
        assert httpx.get(f"{g.url}/healthz").json()["spool_pending"] == len(first)
        second = [f"{user}-b-{i}" for i in range(10)]
        post_all(g.url, key, user, second)  # behind the spooled ones, though Kafka is away
        kafka = start_kafka(tmp_path / "logs", port=port)
        create_topics(kafka.url, Settings())
        assert wait_ids(kafka.url, user, first + second) == first + second
    finally:
        g.stop()
        if kafka is not None:
            kafka.stop()


def test_api_key_cli_stores_only_the_hash(stack):
    import redis

    plain = make_key(stack.redis_url, "g1-cli", "social.*", "admin")
    stored = redis.Redis.from_url(stack.redis_url).hgetall("nf:apikeys")
    assert plain.encode() not in b"".join(k + v for k, v in stored.items())
    listed = subprocess.run([sys.executable, "-m", "gateway.api_keys", "--redis-url",
                             stack.redis_url, "list"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    assert '"name":"g1-cli"' in listed and plain not in listed


def test_a_second_gateway_on_the_same_spool_refuses_to_start(stack, tmp_path):
    """Before: both ran, appending to and deleting the same segments."""
    env = spool_env(stack, f"127.0.0.1:{free_port()}", tmp_path / "spool")
    g = start_gateway(env, tmp_path / "logs", name="gateway-a")
    try:
        with pytest.raises(RuntimeError, match="exited with") as refused:
            start_gateway(env, tmp_path / "logs", name="gateway-b")
        log = (tmp_path / "logs" / "gateway-b.log").read_text()
        assert f"spool folder {tmp_path / 'spool'} is in use" in log, str(refused.value)
        assert f"pid {g.pid}" in log
        assert httpx.get(f"{g.url}/healthz").json()["ok"] is True  # the first one goes on
    finally:
        g.stop()
