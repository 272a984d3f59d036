"""Audiences end to end over real parts: Tansu, the bulk flow, Redis, the sandbox, chDB.

Subscriptions, presence, settings and devices are published like upstream would; one
audience request is published once; the flow scatters it, expands each partition's
members in chunks, pushes the active ones now and leaves one pull-on-read entry for the
rest, which ``merge_into_inbox`` puts into their inbox exactly once.

Every fan-out here expires a minute or two after it is sent, so flows started later in
the session (they read notify.requests from the start) see it expired and fan nothing out.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from gateway.api_keys import create_key
from gateway.user_tokens import create_token
from loader.client import Loader, local_sql
from notiflow.topics import partition_for
from sandbox.client import SandboxControl
from sinks.pull_feed import merge_into_inbox
from stack.fanout_status import fanout_status
from tests.lanes import run_lanes
from tests.ordering import settle

P = 4
NOW_MS = lambda: int(time.time() * 1000)  # noqa: E731


@pytest.fixture(scope="module")
def flow(stack, tmp_path_factory):
    # small chunks, so even a few hundred members take several ticks
    env = {**stack.env(), "NOTIFLOW_FANOUT_CHUNK": "50"}
    yield from run_lanes(env, tmp_path_factory, ("main",), "fanout")


@pytest.fixture(scope="module")
def r(stack):
    client = redis.Redis.from_url(stack.redis_url)
    yield client
    client.close()


def tag(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def publish_users(producer, users: list[str], *, follows: str | None = None,
                  active: set[str] = frozenset(), device: bool = True) -> None:
    now = NOW_MS()
    for i, u in enumerate(users):
        p = partition_for(u, P)
        producer.produce("notify.settings", orjson.dumps({"v": 1, "user_id": u}), u.encode(),
                         partition=p)
        if device:
            producer.produce("notify.devices", orjson.dumps({
                "v": 1, "user_id": u, "token_id": "phone", "platform": "apns",
                "token": f"{i + 1:064x}", "active": True}), f"{u}:phone".encode(), partition=p)
        if follows:
            producer.produce("notify.subscriptions",
                             orjson.dumps({"v": 1, "user_id": u, "target": follows}),
                             f"{u}|{follows}".encode(), partition=p)
        if u in active:
            producer.produce("notify.presence",
                             orjson.dumps({"v": 1, "user_id": u, "seen_ms": now}),
                             u.encode(), partition=p)
    assert producer.flush(30) == 0  # acknowledged before the request (the order kept)


def publish_audience(producer, nid: str, audience: dict, *, ttl_s: int = 120,
                     channels=("push", "inapp")) -> None:
    now = NOW_MS()
    body = {"v": 1, "id": nid, "type": "social.post", "audience": audience,
            "channels": list(channels), "title": "New post", "body": f"body of {nid}",
            "created_at": now, "expires_at": now + ttl_s * 1000}
    producer.produce("notify.requests", orjson.dumps(body), audience.get("id", "all").encode())
    assert producer.flush(10) == 0


def wait_done(stack, r, nid: str, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    status = None
    while time.time() < deadline:
        status = fanout_status(r, Loader(stack.stats_url, stack.loader_token), nid)
        if status and status["finished"]:
            return status
        time.sleep(0.3)
    pytest.fail(f"fan-out {nid} not finished after {timeout}s: {status}")


def sent_receipts(stack, producer, nid: str, want: int, timeout: float = 60) -> list[tuple]:
    """At least ``want`` sent receipts, then all of them once later marker requests on
    every partition are delivered on the same channels (a wrong extra one would be there)."""
    sql = (f"SELECT user_id, channel, outcome FROM notiflow.receipts "
           f"WHERE notification_id = '{nid}' AND outcome = 'sent'")
    deadline = time.time() + timeout
    rows: list = []
    while time.time() < deadline:
        rows = local_sql(stack.loader_socket, sql, timeout=10).rows
        if len(rows) >= want:
            settle(producer, stack, P, channels=tuple(sorted({x[1] for x in rows})))
            rows = local_sql(stack.loader_socket, sql, timeout=10).rows
            return [tuple(x) for x in rows]
        time.sleep(0.3)
    pytest.fail(f"only {len(rows)} of {want} sent receipts for {nid}")


def inbox_ids(r, user: str) -> list[str]:
    return [orjson.loads(e)["id"] for e in r.lrange(f"nf:inbox:{user}", 0, -1)]


def test_followers_audience_pushes_active_and_pulls_the_rest_once(stack, flow, producer, r):
    star = tag("star")
    followers = [f"{star}-f{i:03d}" for i in range(300)]
    active = set(followers[::6])  # 50 active in the presence window
    publish_users(producer, followers, follows=f"followers:{star}", active=active)
    nid = tag("fan")
    publish_audience(producer, nid, {"kind": "followers", "id": star})

    status = wait_done(stack, r, nid)
    assert (status["audience"], status["partitions"]) == (f"followers:{star}", P)
    assert (status["expanded"], status["routed_now"], status["deferred"]) == (300, 50, 250)

    rows = sent_receipts(stack, producer, nid, want=100)
    assert sorted(rows) == sorted([(u, ch, "sent") for u in active for ch in ("push", "inapp")])
    sandbox = SandboxControl(stack.sandbox_url)
    pushed = [m for m in sandbox.messages("apns") if m["nid"] == nid]
    assert len(pushed) == 50  # one push per active follower, none for the inactive ones
    loader = Loader(stack.stats_url, stack.loader_token)
    assert fanout_status(r, loader, nid)["outcomes"] == {"sent": 100}

    quiet = next(u for u in followers if u not in active)
    assert inbox_ids(r, quiet) == []  # nothing written for an inactive follower
    assert merge_into_inbox(r, quiet) == 1  # the pull-on-read entry, at the next app open
    assert merge_into_inbox(r, quiet) == 0  # once
    assert inbox_ids(r, quiet) == [nid] and int(r.get(f"nf:badge:{quiet}")) == 1
    pushed_user = next(iter(active))
    assert merge_into_inbox(r, pushed_user) == 0  # already in its inbox: the same marker
    assert inbox_ids(r, pushed_user) == [nid]

    stranger = tag("stranger")  # follows nobody: gets nothing
    assert merge_into_inbox(r, stranger) == 0


def test_topic_audience_without_hybrid_reaches_every_subscriber(stack, flow, producer, r):
    topic = tag("sports")
    fans = [f"{topic}-s{i:02d}" for i in range(40)]
    publish_users(producer, fans, follows=f"topic:{topic}", device=False)
    unsubscribed = fans[0]
    producer.produce("notify.subscriptions", None, f"{unsubscribed}|topic:{topic}".encode(),
                     partition=partition_for(unsubscribed, P))  # tombstone = unsubscribe
    assert producer.flush(10) == 0
    nid = tag("goal")
    publish_audience(producer, nid, {"kind": "topic", "id": topic, "hybrid": False},
                     channels=["inapp"])

    status = wait_done(stack, r, nid)
    assert (status["expanded"], status["routed_now"], status["deferred"]) == (39, 39, 0)
    rows = sent_receipts(stack, producer, nid, want=39)
    assert sorted(u for u, _ch, _o in rows) == sorted(fans[1:])
    assert inbox_ids(r, unsubscribed) == []
    assert r.zcard(f"nf:pull:topic:{topic}") == 0  # no pull entry without hybrid


def test_all_audience_pushes_the_active_and_stores_one_entry(stack, flow, producer, r):
    people = [tag("everyone") for _ in range(12)]
    active = set(people[:2])
    publish_users(producer, people, active=active)
    nid = tag("bcast")
    ttl_s = 20
    expires = time.time() + ttl_s
    publish_audience(producer, nid, {"kind": "all"}, ttl_s=ttl_s, channels=["inapp"])
    try:
        status = wait_done(stack, r, nid)
        assert status["audience"] == "all" and status["expanded"] >= len(people)
        rows = sent_receipts(stack, producer, nid, want=len(active))
        assert active <= {u for u, _ch, _o in rows}
        assert not {u for u, _ch, _o in rows} & (set(people) - active)
        mine = [m for m in r.zrange("nf:pull:all", 0, -1) if orjson.loads(m)["id"] == nid]
        assert len(mine) == 1
        late = people[-1]
        assert merge_into_inbox(r, late) >= 1 and nid in inbox_ids(r, late)
        assert merge_into_inbox(r, late) == 0
    finally:  # every user's next inbox read would merge it: keep other tests' inboxes exact
        # flows other modules start later read notify.requests from the beginning and would
        # store it again until it expires: wait that out, then remove it
        time.sleep(max(0.0, expires - time.time() + 1))
        for m in r.zrange("nf:pull:all", 0, -1):
            if orjson.loads(m)["id"] == nid:
                r.zrem("nf:pull:all", m)


SECRET = "e2e-fanout-token-secret-at-least-32-bytes"  # the gateway refuses shorter


@pytest.fixture(scope="module")
def gateway(stack, tmp_path_factory):
    from stack.services import start_gateway

    work = tmp_path_factory.mktemp("gateway-fanout")
    svc = start_gateway({**stack.env(), "NOTIFLOW_USER_TOKEN_SECRET": SECRET,
                         "NOTIFLOW_GATEWAY_SPOOL_DIR": str(work / "spool")},
                        log_dir=work, name="gateway-fanout")
    try:
        with httpx.Client(base_url=svc.url, timeout=10) as client:
            yield client
    finally:
        svc.stop()


def api_keys(stack, *scopes: str) -> list[str]:
    async def make():
        r = aioredis.from_url(stack.redis_url)
        try:
            return [await create_key(r, tag("svc"), [s], 100, 100) for s in scopes]
        finally:
            await r.aclose()

    return asyncio.run(make())


def test_gateway_progress_inbox_merge_and_presence_closes_the_loop(stack, flow, producer, r,
                                                                    gateway):
    star = tag("idol")
    fans = [f"{star}-f{i:02d}" for i in range(20)]
    publish_users(producer, fans, follows=f"followers:{star}")  # nobody active yet
    first = tag("post1")
    publish_audience(producer, first, {"kind": "followers", "id": star}, channels=["inapp"])
    wait_done(stack, r, first)

    social, billing = api_keys(stack, "social.*", "billing.*")
    got = gateway.get(f"/v1/fanouts/{first}", headers={"X-API-Key": social})
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["id"], body["expanded"], body["routed_now"], body["deferred"]) == (
        first, 20, 0, 20)
    assert body["finished"] is True and body["partitions_done"] == P
    assert gateway.get(f"/v1/fanouts/{first}", headers={"X-API-Key": billing}).status_code == 403
    assert gateway.get(f"/v1/fanouts/{tag('nope')}",
                       headers={"X-API-Key": social}).status_code == 404

    # the fan opens the app: the inbox read merges the pull entry and publishes presence
    fan = fans[3]
    page = gateway.get(f"/v1/users/{fan}/inbox",
                       headers={"Authorization": f"Bearer {create_token(fan, SECRET.encode(), 600)}"})
    assert page.status_code == 200, page.text
    assert [e["id"] for e in page.json()["entries"]] == [first]  # (the broadcast is gone)
    # ... so the next post reaches them now (once the flow has read the presence record)
    deadline = time.time() + 30
    second = None
    while time.time() < deadline:
        second = tag("post2")
        publish_audience(producer, second, {"kind": "followers", "id": star},
                         channels=["inapp"])
        status = wait_done(stack, r, second)
        if status["routed_now"] == 1:
            break
        time.sleep(0.5)
    assert status["routed_now"] == 1, status
    assert sent_receipts(stack, producer, second, want=1) == [(fan, "inapp", "sent")]
