"""One identity for dedup and the sent-markers (schemas/identity.py): unambiguous, namespaced
by the producer, and the same wherever a send is named (router, in-app, pull-on-read)."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway.api_keys import ApiKey
from gateway.app import create_app
from notiflow.config import Settings
from notiflow.topics import partition_for
from operators.partition import REQUEST, PartitionProcessor
from schemas.errors import ValidationFailed
from schemas.identity import SEND_KEY_RE, gateway_producer, identity, send_key
from schemas.request import decode_request
from schemas.task import check_task
from sinks.markers import marker_key
from sinks.pull_feed import _script_args

N, NOW = 4, 1_764_050_000_000
text = st.text(max_size=12)  # any characters: the separators of the old keys included
events = st.none() | st.tuples(text, text)


def user_in(p: int) -> str:
    return next(u for i in range(1000) if partition_for(u := f"u{i}", N) == p)


def request(user: str, **kw) -> tuple[int, bytes, bytes, int]:
    body = {"id": "n1", "type": "social.like", "created_at": NOW - 10, "recipients": [user],
            "body": "hi", "channels": ["inapp"], **kw}
    return (REQUEST, user.encode(), orjson.dumps(body), 0)


# -- the encoding -------------------------------------------------------------------------
@given(st.tuples(text, text, events, text, text), st.tuples(text, text, events, text, text))
def test_distinct_parts_never_give_the_same_dedup_key(a, b):
    if a[2] is not None and b[2] is not None:
        a, b = (*a[:3], "", a[4]), (*b[:3], "", b[4])  # the id is not part of an event's key
    assert (identity(*a) == identity(*b)) == (a == b)


@given(st.tuples(text, text, events, text, text, text, text),
       st.tuples(text, text, events, text, text, text, text))
def test_distinct_parts_never_give_the_same_send_key(a, b):
    assert (send_key(*a) == send_key(*b)) == (a == b)


@given(text, text, text, text)
def test_producer_namespaces_never_collide(p1, p2, nid, user):
    if p1 != p2:
        assert identity(p1, "t", None, nid, user) != identity(p2, "t", None, nid, user)
        assert send_key(p1, "t", None, nid, user, "push", "d") != \
            send_key(p2, "t", None, nid, user, "push", "d")


def test_parts_that_join_to_the_same_text_stay_apart():
    # "a|b" + "c" and "a" + "b|c" were one dedup key (type|actor|object|recipient)
    assert identity("", "t", ("a|b", "c"), "n", "u") != identity("", "t", ("a", "b|c"), "n", "u")
    # id "x:u2" for u1 and id "x" for "u2:u1"... and markers id:user:channel:target
    assert send_key("", "t", None, "n:u", "v", "push", "d") != \
        send_key("", "t", None, "n", "u:v", "push", "d")
    # a dedup key is never a send key, whatever the parts
    assert identity("", "t", None, "n", "u") != identity("", "t", None, "n", "u", "", "")


def test_a_send_key_is_short_and_what_a_task_may_carry():
    k = send_key("p", "t", ("a" * 256, "o" * 256), "n" * 200, "u" * 128, "push", "d" * 128)
    assert SEND_KEY_RE.fullmatch(k)  # 32 hex digits, however long the parts


# -- the flow: dedup and markers agree, per producer ----------------------------------
def test_two_producers_reusing_an_id_are_two_notifications():
    u = user_in(0)
    proc = PartitionProcessor(0, N)
    out = proc.process([request(u, producer="billing"), request(u, producer="social")], NOW)
    assert [r.outcome for r in out.receipts] == []  # old: the second was a duplicate
    a, b = out.inapp
    assert (a.producer, b.producer) == ("billing", "social")
    assert marker_key(a) != marker_key(b)


def test_the_same_producer_and_id_is_still_one_notification():
    u = user_in(0)
    proc = PartitionProcessor(0, N)
    out = proc.process([request(u, producer="social"), request(u, producer="social")], NOW)
    assert len(out.inapp) == 1 and [r.outcome for r in out.receipts] == ["duplicate"]


def test_what_dedup_keeps_apart_the_markers_keep_apart():
    # one id, two events (dedup parts differ): dedup routes both; the old marker
    # (id:user:channel:target) then skipped the second as "already sent"
    u = user_in(0)
    proc = PartitionProcessor(0, N)
    out = proc.process([request(u, dedup={"actor": "ann", "object": "p9"}),
                        request(u, dedup={"actor": "bob", "object": "p9"})], NOW)
    assert len(out.inapp) == 2
    assert len({marker_key(t) for t in out.inapp}) == 2


def test_a_replayed_request_meets_its_own_marker():
    u = user_in(0)
    first = PartitionProcessor(0, N).process([request(u, producer="s")], NOW).inapp
    again = PartitionProcessor(0, N).process([request(u, producer="s")], NOW + 5).inapp
    assert [marker_key(t) for t in first] == [marker_key(t) for t in again]


def test_a_pull_on_read_merge_uses_the_marker_of_a_member_pushed_the_request():
    from operators.fanout import pull_entry

    u = user_in(0)
    raw = request(u, producer="news", dedup={"actor": "ed", "object": "issue-7"})[2]
    pushed = PartitionProcessor(0, N).process([(REQUEST, u.encode(), raw, 0)], NOW).inapp
    entry = orjson.loads(pull_entry(decode_request(raw)))
    _ttl, _max, items, _live = _script_args(u, [entry], 200, 3600, "user")
    [(user, marker, _entry)] = orjson.loads(items)
    assert (user, marker) == (u, marker_key(pushed[0]))


def test_tasks_from_before_the_identity_still_have_a_marker():
    from msgspec.structs import replace

    u = user_in(0)
    [t] = PartitionProcessor(0, N).process([request(u)], NOW).inapp
    old = replace(t, key="", producer="")
    assert marker_key(old) == marker_key(t)  # "" producer, no dedup parts: the same parts


def test_a_task_carries_only_a_well_formed_key_and_producer():
    from msgspec.structs import replace

    u = user_in(0)
    [t] = PartitionProcessor(0, N).process([request(u)], NOW).inapp
    check_task(t)
    for bad in (replace(t, key="nf:sent:x"), replace(t, producer="a b")):
        try:
            check_task(bad)
        except ValidationFailed:
            continue
        raise AssertionError(f"accepted {bad}")


def test_a_producer_name_is_checked_like_the_other_fields():
    u = user_in(0)
    out = PartitionProcessor(0, N).process([request(u, producer="x" * 65)], NOW)
    assert out.inapp == [] and "producer" in out.receipts[0].reason


# -- the gateway: the API key's namespace, whatever the body says ----------------------
class _Keys:
    def __init__(self, key_hash: str) -> None:
        self.key_hash = key_hash

    async def lookup(self, plaintext: str) -> ApiKey:
        return ApiKey("svc", ("*",), 1e6, 10**6, self.key_hash)


class _Producer:
    def __init__(self) -> None:
        self.records: list = []

    async def send(self, records: list) -> str:
        self.records.extend(records)
        return "kafka"


def _post(key_hash: str, path: str, body: dict) -> list:
    cfg = Settings(dev_mode=True)
    app = create_app(cfg)
    app.state.settings, app.state.key_store, app.state.redis = cfg, _Keys(key_hash), None
    app.state.producer = producer = _Producer()

    async def grant(*_a, **_k):
        return True, 0.0

    app.state.try_acquire = grant

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            r = await c.post(path, json=body, headers={"Authorization": "Bearer nfk_x"})
            assert r.status_code == 202, r.text

    asyncio.run(go())
    return [decode_request(rec.value) for rec in producer.records]


def test_the_gateway_puts_every_request_in_its_api_keys_namespace():
    one = {"id": "n1", "type": "a.b", "recipients": ["u1"], "body": "b",
           "producer": gateway_producer("b" * 64)}  # another key's namespace: overwritten
    [a] = _post("a" * 64, "/v1/notifications", one)
    [b] = _post("c" * 64, "/v1/notifications/batch", {"requests": [one]})
    assert a.producer == gateway_producer("a" * 64) and b.producer == gateway_producer("c" * 64)
    assert a.dedup_key("u1") != b.dedup_key("u1")  # one id, two keys: two notifications
