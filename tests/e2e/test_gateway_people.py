"""The people's API over real parts: a real gateway process (``python -m gateway``) against
the session's Tansu, Redis and loader; in-app entries written by the real in-app sink
(sinks/inapp.py) or by the real main flow.

Covers: user tokens (401 missing/bad/expired, 403 another user's data), admin keys read
only, 4xx bodies with reasons, settings and devices reaching Kafka on the user's
partition (and the flow acting on them), inbox paging with read flags, mark-read and
badge, and live alerts over SSE in both live modes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis
from confluent_kafka import Consumer, Producer, TopicPartition

from gateway.api_keys import create_key
from gateway.user_tokens import create_token
from loader.client import local_sql
from notiflow.topics import partition_for
from schemas.task import DeliveryTask
from sinks.inapp import InappWriter

P = 4  # the stack fixture's partitions (Settings.partitions)
SECRET = secrets.token_urlsafe(32)  # the gateway refuses short ones


def uid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def token(user: str, ttl: int = 600, now: float | None = None) -> str:
    return create_token(user, SECRET.encode(), ttl, now_s=now)


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


def _gateway(stack, tmp_path_factory, name: str, **extra: str):
    from stack.services import start_gateway

    work = tmp_path_factory.mktemp(name)
    env = {**stack.env(), "NOTIFLOW_USER_TOKEN_SECRET": SECRET,
           "NOTIFLOW_GATEWAY_SPOOL_DIR": str(work / "spool"), "NOTIFLOW_SSE_HEARTBEAT_S": "1",
           **extra}
    return start_gateway(env, log_dir=work, name=name)


@pytest.fixture(scope="module")
def gateway(stack, tmp_path_factory):
    svc = _gateway(stack, tmp_path_factory, "gateway-people")
    try:
        yield svc.url
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def batch_gateway(stack, tmp_path_factory):
    """A gateway reading the sink's batch live channel (NOTIFLOW_INAPP_LIVE=batch)."""
    svc = _gateway(stack, tmp_path_factory, "gateway-people-batch", NOTIFLOW_INAPP_LIVE="batch")
    try:
        yield svc.url
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def keys(stack):
    """(admin key, producer key) created in the gateway's Redis."""

    async def make():
        r = aioredis.from_url(stack.redis_url)
        try:
            return (await create_key(r, uid("ops"), ["admin"], 100, 100),
                    await create_key(r, uid("svc"), ["*"], 100, 100))
        finally:
            await r.aclose()

    return asyncio.run(make())


@pytest.fixture(scope="module")
def writer(stack):
    w = InappWriter(stack.redis_url, inbox_max=200, marker_ttl_s=3600, live="user")
    yield w
    w.close()


@pytest.fixture(scope="module")
def main_flow(stack, tmp_path_factory):
    from stack.services import start_flow

    started = start_flow("main", stack.env(), processes=1, workers=1,
                         recovery_dir=tmp_path_factory.mktemp("rec-people"))
    try:
        yield started
    finally:
        for s in reversed(started):
            s.stop()


def inapp_task(user: str, nid: str, title: str = "Hi") -> DeliveryTask:
    return DeliveryTask(notification_id=nid, user_id=user, type="social.comment",
                        priority="normal", channel="inapp", provider="redis",
                        target_id="inbox", address="", title=title, body=f"body {nid}",
                        template=None, data=None, collapse_key=None,
                        created_ms=int(time.time() * 1000))


def error_of(r: httpx.Response, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"] and body["reason"], body
    for w in words:
        assert w in body["reason"], body
    return body["reason"]


def read_topic(stack, topic: str, partition: int, key: bytes, timeout: float = 10):
    """Values (None: tombstone) of records with ``key`` on one partition, oldest first."""
    c = Consumer({"bootstrap.servers": stack.brokers, "group.id": uid("t"),
                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
        c.assign([TopicPartition(topic, partition, lo)])
        out, deadline = [], time.time() + timeout
        pos = lo
        while pos < hi and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            pos = m.offset() + 1
            if m.key() == key:
                out.append(m.value())
        return out
    finally:
        c.close()


# --- credentials ---------------------------------------------------------------------------

ROUTES = [("GET", "/settings"), ("PUT", "/settings"), ("POST", "/devices"),
          ("DELETE", "/devices/phone"), ("GET", "/inbox"), ("POST", "/inbox/read"),
          ("GET", "/badge"), ("GET", "/live")]


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_needs_the_users_own_token(client, method, path):
    ann, bob = uid("ann"), uid("bob")
    url = f"/v1/users/{ann}{path}"
    error_of(client.request(method, url), 401, "missing user token")
    r = client.request(method, url, headers={"Authorization": "Bearer nfu1.abc.def"})
    error_of(r, 401, "bad signature")
    assert r.headers["www-authenticate"] == "Bearer"
    expired = token(ann, ttl=60, now=time.time() - 120)
    error_of(client.request(method, url, headers={"Authorization": f"Bearer {expired}"}),
             401, "expired")
    forged = create_token(ann, b"not-the-secret", 600)
    error_of(client.request(method, url, headers={"Authorization": f"Bearer {forged}"}),
             401, "bad signature")
    error_of(client.request(method, url, headers=auth(bob)), 403, bob, ann)


def test_admin_key_reads_any_inbox_but_changes_nothing(client, keys):
    admin, producer_key = keys
    ann = uid("ann")
    for path in ("/inbox", "/badge"):
        r = client.get(f"/v1/users/{ann}{path}", headers={"X-API-Key": admin})
        assert r.status_code == 200, r.text
        error_of(client.get(f"/v1/users/{ann}{path}",
                            headers={"Authorization": f"Bearer {producer_key}"}), 403, "admin")
    error_of(client.put(f"/v1/users/{ann}/settings", headers={"X-API-Key": admin},
                        json={"user_id": ann}), 403, "API keys may not change")
    error_of(client.post(f"/v1/users/{ann}/inbox/read", headers={"X-API-Key": admin},
                         json={"all": True}), 403, "API keys may not change")
    error_of(client.get(f"/v1/users/{ann}/badge", headers={"X-API-Key": "nfk_unknown"}),
             401, "unknown")


# --- bodies --------------------------------------------------------------------------------

def test_bad_bodies_get_4xx_with_a_reason(client):
    ann = uid("ann")
    h = auth(ann)
    base = f"/v1/users/{ann}"
    error_of(client.put(f"{base}/settings", headers=h, content=b"x" * 20_000), 413, "limit")
    error_of(client.put(f"{base}/settings", headers=h, content=b"{not json"), 400, "JSON")
    error_of(client.put(f"{base}/settings", headers=h, content=b""), 400, "empty")
    error_of(client.put(f"{base}/settings", headers=h, json=[1, 2]), 422)
    error_of(client.put(f"{base}/settings", headers=h, json={"user_id": ann, "phone": "12"}),
             422, "phone")
    error_of(client.put(f"{base}/settings", headers=h, json={"user_id": ann, "colour": 1}),
             422, "colour")
    error_of(client.put(f"{base}/settings", headers=h, json={"user_id": "someone-else"}),
             422, "does not match")
    error_of(client.post(f"{base}/devices", headers=h, json={"user_id": ann, "token_id": "a",
                                                             "platform": "fax", "token": "t"}),
             422, "platform")
    error_of(client.post(f"{base}/inbox/read", headers=h, json={}), 422, "either")
    error_of(client.post(f"{base}/inbox/read", headers=h, json={"ids": ["a"], "all": True}),
             422, "either")
    error_of(client.post(f"{base}/inbox/read", headers=h, json={"ids": [1]}), 422, "ids")
    error_of(client.get(f"{base}/inbox", headers=h, params={"cursor": "bm9wZQ"}), 400, "cursor")
    error_of(client.get(f"{base}/inbox", headers=h, params={"limit": 0}), 422, "limit")
    error_of(client.get("/v1/users/a%20b/inbox", headers=h), 422, "user_id")
    # before: registered (re.match's $ let the newline through), and DELETE's path pattern
    # never matched it again: a device nobody could remove
    error_of(client.post(f"{base}/devices", headers=h, json={
        "user_id": ann, "token_id": "ipad\n", "platform": "apns", "token": "ab" * 32}),
        422, "token_id")


# --- settings and devices ------------------------------------------------------------------

def test_settings_put_is_published_and_read_back(client, stack):
    ann = uid("ann")
    h = auth(ann)
    r = client.get(f"/v1/users/{ann}/settings", headers=h)
    assert r.status_code == 200 and r.headers["x-settings-source"] == "defaults"
    assert r.json()["user_id"] == ann and r.json()["channels"] == {}

    new = {"user_id": ann, "channels": {"sms": False}, "opt_out_types": ["marketing"],
           "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Europe/Paris"},
           "phone": "+15551234567"}
    r = client.put(f"/v1/users/{ann}/settings", headers=h, json=new)
    assert r.status_code == 200, r.text  # acked by Kafka (202 would mean: spooled)
    r = client.get(f"/v1/users/{ann}/settings", headers=h)
    assert r.headers["x-settings-source"] == "stored"
    got = r.json()
    assert got["channels"] == {"sms": False} and got["quiet_hours"]["tz"] == "Europe/Paris"

    values = read_topic(stack, "notify.settings", partition_for(ann, P), ann.encode())
    assert len(values) == 1 and orjson.loads(values[0])["opt_out_types"] == ["marketing"]


def test_settings_published_straight_to_kafka_show_in_get(client, stack, main_flow):
    """Upstream publishes settings without the gateway: the flow keeps the read copy."""
    bob = uid("bob")
    prod = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 1})
    prod.produce("notify.settings", orjson.dumps({"v": 1, "user_id": bob, "locale": "de"}),
                 bob.encode(), partition=partition_for(bob, P))
    prod.flush(10)
    deadline, got = time.time() + 60, {}
    while time.time() < deadline:
        r = client.get(f"/v1/users/{bob}/settings", headers=auth(bob))
        if r.headers["x-settings-source"] == "stored":
            got = r.json()
            break
        time.sleep(0.3)
    assert got.get("locale") == "de"
    prod.produce("notify.settings", None, bob.encode(), partition=partition_for(bob, P))
    prod.flush(10)
    deadline = time.time() + 60
    while time.time() < deadline:
        r = client.get(f"/v1/users/{bob}/settings", headers=auth(bob))
        if r.headers["x-settings-source"] == "defaults":
            break
        time.sleep(0.3)
    assert r.headers["x-settings-source"] == "defaults"


def test_devices_reach_the_flow_and_a_delete_stops_pushes(client, stack, main_flow):
    """Register through the gateway -> the flow pushes to it; DELETE -> no target."""
    from sandbox.client import SandboxControl

    ann = uid("ann")
    h = auth(ann)
    dev = {"user_id": ann, "token_id": "phone", "platform": "apns", "token": "ab" * 32}
    r = client.post(f"/v1/users/{ann}/devices", headers=h, json=dev)
    assert r.status_code == 201, r.text
    p = partition_for(ann, P)
    prod = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 1})

    def push(nid: str) -> None:
        prod.produce("notify.requests", orjson.dumps({
            "v": 1, "id": nid, "type": "social.comment", "recipients": [ann],
            "channels": ["push"], "title": "Hi", "body": "there",
            "created_at": int(time.time() * 1000)}), ann.encode(), partition=p)
        prod.flush(10)

    first = uid("n-dev")
    push(first)
    sandbox = SandboxControl(stack.sandbox_url)
    deadline = time.time() + 60
    while time.time() < deadline and not [m for m in sandbox.messages("apns")
                                          if m["nid"] == first]:
        time.sleep(0.3)
    assert [m["target"] for m in sandbox.messages("apns") if m["nid"] == first]

    r = client.delete(f"/v1/users/{ann}/devices/phone", headers=h)
    assert r.status_code == 204, r.text
    assert read_topic(stack, "notify.devices", p, f"{ann}:phone".encode())[-1] is None
    second = uid("n-dev")
    push(second)
    sql = f"SELECT outcome FROM notiflow.receipts WHERE notification_id = '{second}'"
    deadline, rows = time.time() + 60, []
    while time.time() < deadline and not rows:
        rows = local_sql(stack.loader_socket, sql, timeout=10).rows
        time.sleep(0.3)
    assert rows == [["no_target"]]
    assert not [m for m in sandbox.messages("apns") if m["nid"] == second]


# --- inbox, mark-read, badge ---------------------------------------------------------------

def test_inbox_pages_stay_right_while_new_entries_arrive(client, writer):
    ann = uid("ann")
    h = auth(ann)
    old = [uid("n") for _ in range(5)]
    writer.write([inapp_task(ann, n) for n in old])  # newest is old[-1]
    r = client.get(f"/v1/users/{ann}/inbox", headers=h, params={"limit": 2})
    page1 = r.json()
    assert [e["id"] for e in page1["entries"]] == [old[4], old[3]]
    assert page1["unread"] == 5 and page1["total"] == 5
    assert all(e["read"] is False for e in page1["entries"])

    writer.write([inapp_task(ann, uid("new")) for _ in range(3)])  # shifts every position
    r = client.get(f"/v1/users/{ann}/inbox", headers=h,
                   params={"limit": 2, "cursor": page1["next_cursor"]})
    page2 = r.json()
    assert [e["id"] for e in page2["entries"]] == [old[2], old[1]]
    r = client.get(f"/v1/users/{ann}/inbox", headers=h,
                   params={"limit": 2, "cursor": page2["next_cursor"]})
    page3 = r.json()
    assert [e["id"] for e in page3["entries"]] == [old[0]] and page3["next_cursor"] is None


def test_mark_read_keeps_the_badge_right(client, writer):
    ann = uid("ann")
    h = auth(ann)
    base = f"/v1/users/{ann}"
    ids = [uid("n") for _ in range(4)]
    writer.write([inapp_task(ann, n) for n in ids])
    assert client.get(f"{base}/badge", headers=h).json()["unread"] == 4

    r = client.post(f"{base}/inbox/read", headers=h, json={"ids": [ids[1], "gone-id"]})
    assert r.json() == {"user_id": ann, "marked": 1, "unread": 3, "missing": ["gone-id"]}
    r = client.post(f"{base}/inbox/read", headers=h, json={"ids": [ids[1], ids[1]]})
    assert r.json()["marked"] == 0 and r.json()["unread"] == 3  # twice decrements once
    inbox = client.get(f"{base}/inbox", headers=h).json()["entries"]
    assert {e["id"]: e["read"] for e in inbox} == {ids[0]: False, ids[1]: True,
                                                  ids[2]: False, ids[3]: False}

    r = client.post(f"{base}/inbox/read", headers=h, json={"all": True})
    assert r.json()["marked"] == 3 and r.json()["unread"] == 0
    assert client.get(f"{base}/badge", headers=h).json()["unread"] == 0
    # already read by the watermark: marking one again changes nothing, never below 0
    r = client.post(f"{base}/inbox/read", headers=h, json={"ids": [ids[0]]})
    assert r.json()["marked"] == 0 and r.json()["unread"] == 0

    fresh = uid("n")
    writer.write([inapp_task(ann, fresh)])
    page = client.get(f"{base}/inbox", headers=h).json()
    assert page["unread"] == 1
    assert [(e["id"], e["read"]) for e in page["entries"]] == [
        (fresh, False)] + [(n, True) for n in reversed(ids)]
    r = client.post(f"{base}/inbox/read", headers=h, json={"ids": [fresh]})
    assert r.json()["unread"] == 0


# --- live ----------------------------------------------------------------------------------

def sse_events(resp: httpx.Response, want: int, timeout: float = 30) -> tuple[list[dict], int]:
    """Read ``want`` events from an open SSE response: (events, heartbeats seen)."""
    events, pings, cur = [], 0, {}
    deadline = time.time() + timeout
    for line in resp.iter_lines():
        if line.startswith(": ping"):
            pings += 1
        elif line.startswith("id: "):
            cur["id"] = line[4:]
        elif line.startswith("event: "):
            cur["event"] = line[7:]
        elif line.startswith("data: "):
            cur["data"] = orjson.loads(line[6:])
        elif line == "" and cur:
            events.append(cur)
            cur = {}
        if len(events) >= want or time.time() > deadline:
            break
    return events, pings


def test_live_stream_gets_a_flow_written_alert(gateway, stack, main_flow):
    """User mode: the real flow writes the in-app entry, the SSE client receives it."""
    ann = uid("ann")
    nid = uid("n-live")
    p = partition_for(ann, P)
    prod = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 1})
    with httpx.Client(base_url=gateway, timeout=httpx.Timeout(10, read=5)) as c, \
            c.stream("GET", f"/v1/users/{ann}/live", headers=auth(ann)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        prod.produce("notify.requests", orjson.dumps({
            "v": 1, "id": nid, "type": "social.comment", "recipients": [ann],
            "channels": ["inapp"], "title": "Live", "body": "now",
            "created_at": int(time.time() * 1000)}), ann.encode(), partition=p)
        prod.flush(10)
        events, _ = sse_events(resp, want=1, timeout=60)
    assert [(e["id"], e["event"], e["data"]["title"]) for e in events] == [(nid, "inapp", "Live")]


def test_live_stream_heartbeats_and_lets_go_on_disconnect(gateway, stack):
    ann = uid("ann")
    r = redis.Redis.from_url(stack.redis_url)
    with httpx.Client(base_url=gateway, timeout=httpx.Timeout(10, read=5)) as c, \
            c.stream("GET", f"/v1/users/{ann}/live", headers=auth(ann)) as resp:
        assert dict(r.pubsub_numsub(f"nf:live:{ann}"))[f"nf:live:{ann}".encode()] == 1
        pings = 0
        for line in resp.iter_lines():
            pings += line.startswith(": ping")
            if pings >= 2:
                break
    deadline = time.time() + 10
    while time.time() < deadline and dict(r.pubsub_numsub(f"nf:live:{ann}"))[
            f"nf:live:{ann}".encode()]:
        time.sleep(0.2)
    assert dict(r.pubsub_numsub(f"nf:live:{ann}"))[f"nf:live:{ann}".encode()] == 0


def test_live_stream_in_batch_mode_gets_only_its_users_alerts(batch_gateway, stack):
    """Batch mode: one message per sink batch on nf:live; each stream sees its user's."""
    ann, bob = uid("ann"), uid("bob")
    w = InappWriter(stack.redis_url, inbox_max=200, marker_ttl_s=3600, live="batch")
    try:
        with httpx.Client(base_url=batch_gateway, timeout=httpx.Timeout(10, read=5)) as c, \
                c.stream("GET", f"/v1/users/{ann}/live", headers=auth(ann)) as resp:
            assert resp.status_code == 200
            mine = [uid("a"), uid("a")]
            w.write([inapp_task(ann, mine[0]), inapp_task(bob, uid("b")),
                     inapp_task(ann, mine[1])])
            events, _ = sse_events(resp, want=2)
    finally:
        w.close()
    assert [e["id"] for e in events] == mine


def test_trimmed_inbox_ends_old_cursors_and_drops_an_old_read_mark(client, stack):
    """Over NOTIFLOW_INBOX_MAX the sink trims the oldest entries: a cursor into them ends
    the paging, and a read-all mark trimmed away leaves every remaining entry unread."""
    ann = uid("ann")
    h = auth(ann)
    small = InappWriter(stack.redis_url, inbox_max=3, marker_ttl_s=3600, live="user")
    try:
        small.write([inapp_task(ann, uid("old")) for _ in range(3)])
        cursor = client.get(f"/v1/users/{ann}/inbox", headers=h,
                            params={"limit": 2}).json()["next_cursor"]
        assert client.post(f"/v1/users/{ann}/inbox/read", headers=h,
                           json={"all": True}).json()["marked"] == 3
        new = [uid("new") for _ in range(3)]
        small.write([inapp_task(ann, n) for n in new])  # pushes every old entry out
    finally:
        small.close()
    page = client.get(f"/v1/users/{ann}/inbox", headers=h,
                      params={"limit": 2, "cursor": cursor}).json()
    assert page["entries"] == [] and page["next_cursor"] is None
    page = client.get(f"/v1/users/{ann}/inbox", headers=h).json()
    assert [(e["id"], e["read"]) for e in page["entries"]] == [(n, False) for n in reversed(new)]
    assert page["unread"] == 3


def test_live_stream_resumes_after_last_event_id(gateway, stack):
    """A reconnecting app (EventSource sends Last-Event-ID) first gets what it missed,
    oldest first, then live alerts; an id no longer in the inbox gets one resync event."""
    ann = uid("ann")
    missed = [uid("m") for _ in range(3)]
    w = InappWriter(stack.redis_url, inbox_max=200, marker_ttl_s=3600, live="user")
    try:
        w.write([inapp_task(ann, n) for n in missed])
        with httpx.Client(base_url=gateway, timeout=httpx.Timeout(10, read=5)) as c:
            with c.stream("GET", f"/v1/users/{ann}/live",
                          headers={**auth(ann), "Last-Event-ID": missed[0]}) as resp:
                assert resp.status_code == 200
                live = uid("live")
                w.write([inapp_task(ann, live)])
                events, _ = sse_events(resp, want=3)
            assert [e["id"] for e in events] == [missed[1], missed[2], live]
            with c.stream("GET", f"/v1/users/{ann}/live",
                          headers={**auth(ann), "Last-Event-ID": "gone"}) as resp:
                events, _ = sse_events(resp, want=1)
            assert [e["event"] for e in events] == ["resync"]
            assert "read the inbox" in events[0]["data"]["reason"]
    finally:
        w.close()
