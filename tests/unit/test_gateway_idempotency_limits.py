"""A 202 from the gateway is never a rejection in the flow because of what the gateway added.

An Idempotency-Key (up to 255 characters, which is up to 510 bytes of UTF-8 from a latin-1
header) used to become ``dedup.object = "idem:<key>"``, and the API key's name
``dedup.actor``; the flow re-checks both against 256 bytes and rejected the request the
gateway had accepted.  Both are digests now, and key names are short and printable.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.api_keys import ApiKey, create_key
from gateway.app import create_app
from gateway.notifications import MAX_IDEMPOTENCY_KEY, idempotency_dedup
from notiflow.config import Settings
from schemas.limits import MAX_DEDUP_PART_BYTES
from schemas.request import decode_request

CFG = Settings(dev_mode=True)


class Keys:
    def __init__(self, name: str) -> None:
        self.name = name

    async def lookup(self, plaintext: str) -> ApiKey:
        return ApiKey(self.name, ("*",), 1e6, 10**6, "0" * 64)


class Redis:
    async def set(self, *_a, **_k) -> bool:
        return True  # first use of every Idempotency-Key


class Producer:
    def __init__(self) -> None:
        self.records: list = []

    async def send(self, records: list) -> str:
        self.records.extend(records)
        return "kafka"


def submit(key_name: str, idem: str) -> tuple[httpx.Response, list]:
    app = create_app(CFG)
    app.state.settings, app.state.key_store, app.state.redis = CFG, Keys(key_name), Redis()
    app.state.producer = producer = Producer()

    async def grant(*_a, **_k):
        return True, 0.0

    app.state.try_acquire = grant

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            return await c.post("/v1/notifications", json={
                "type": "a.b", "recipients": ["u1"], "body": "b"}, headers={
                "Authorization": "Bearer nfk_x", "Idempotency-Key": idem.encode("latin-1")})

    return asyncio.run(go()), producer.records


@pytest.mark.parametrize(("key_name", "idem"), [
    ("svc", "ÿ" * MAX_IDEMPOTENCY_KEY),  # 255 characters, 510 bytes of UTF-8
    ("svc", "x" * MAX_IDEMPOTENCY_KEY),
    ("n" * 300, "order-1"),  # a name stored before names were capped
])
def test_what_the_gateway_accepts_with_an_idempotency_key_the_flow_accepts(key_name, idem):
    r, records = submit(key_name, idem)
    assert r.status_code == 202, r.text
    [rec] = records
    req = decode_request(rec.value)  # the flow's decoder and checks
    assert req.id == r.json()["id"]
    assert req.dedup is not None
    for part in (req.dedup.actor, req.dedup.object):
        assert len(part.encode()) <= MAX_DEDUP_PART_BYTES


def test_the_dedup_parts_name_the_key_and_the_idempotency_key():
    k = ApiKey("svc", ("*",), 1, 1, "0" * 64)
    a, b = idempotency_dedup(k, "order-1"), idempotency_dedup(k, "order-2")
    assert a == idempotency_dedup(k, "order-1") and a.actor == b.actor and a.object != b.object
    assert idempotency_dedup(ApiKey("other", ("*",), 1, 1, "1" * 64), "order-1").actor != a.actor


@pytest.mark.parametrize("name", ["", "a b", "n" * 65, "ops\n", "ops/1", "é"])
def test_key_names_are_short_and_printable(name):
    with pytest.raises(ValueError, match="name"):
        asyncio.run(create_key(None, name, ["*"], 1, 1))  # refused before any Redis call


def test_a_64_character_name_is_a_name():
    class R:
        async def hset(self, *_a) -> int:
            return 1

    assert asyncio.run(create_key(R(), "a-B_9." + "n" * 58, ["*"], 1, 1)).startswith("nfk_")
