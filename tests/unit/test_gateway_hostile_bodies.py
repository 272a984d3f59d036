"""Bodies no caller can turn into a 500, and a write rate per user on the people's API.

JSON nested ~1,000+ levels deep (a few KB) makes msgspec raise RecursionError, not
DecodeError: it used to escape as a 500 on /v1/notifications, /batch and every people's
API body that could hold any JSON.  It is now a 422 naming the problem.  The routes run in process (no lifespan):
the JSON is refused before any Redis or Kafka call.
"""

from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest

from gateway.api_keys import ApiKey
from gateway.app import create_app
from gateway.user_tokens import create_token
from notiflow.config import Settings
from schemas.errors import TOO_DEEP

SECRET = secrets.token_urlsafe(32)
CFG = Settings(user_token_secret=SECRET, people_writes_per_s=1.0, people_writes_burst=3)
DEEP = 1500


def deep(open_: bytes, close: bytes, n: int = DEEP) -> bytes:
    return open_ * n + b"1" + close * n


class Keys:
    async def lookup(self, plaintext: str) -> ApiKey:
        return ApiKey("k", ("*",), 1e6, 10**6, "0" * 64)


class Bucket:
    """Grants ``burst`` writes per user, then refuses (records every user it charged)."""

    def __init__(self) -> None:
        self.taken: dict[str, int] = {}

    async def __call__(self, bucket: str, rate: float, burst: int, n: int = 1):
        self.taken[bucket] = self.taken.get(bucket, 0) + n
        return self.taken[bucket] <= burst, 1.0 / rate


def app_and_bucket():
    app = create_app(CFG)
    app.state.settings = CFG
    app.state.key_store = Keys()

    async def grant(*_a, **_k):
        return True, 0.0

    app.state.try_acquire = grant
    app.state.people_try_acquire = bucket = Bucket()
    return app, bucket


def call(app, method: str, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            return await c.request(method, url, content=body, headers=headers)

    return asyncio.run(go())


KEY = {"Authorization": "Bearer nfk_test"}
USER = {"Authorization": f"Bearer {create_token('u1', SECRET.encode(), 600)}"}
NOTE = b'{"type":"a.b","recipients":["u1"],"body":"b","data":'


@pytest.mark.parametrize(("url", "body"), [
    ("/v1/notifications", NOTE + deep(b'{"a":', b"}") + b"}"),
    ("/v1/notifications", deep(b"[", b"]")),
    ("/v1/notifications/batch", b'{"requests":' + deep(b"[", b"]") + b"}"),
    ("/v1/notifications/batch", b'{"requests":[' + NOTE + deep(b"[", b"]") + b"}]}"),
])
def test_deep_json_is_a_422_never_a_500(url, body):
    app, _ = app_and_bucket()
    r = call(app, "POST", url, body, KEY)
    assert r.status_code == 422, r.text
    assert TOO_DEEP in r.text


@pytest.mark.parametrize(("method", "url", "body"), [
    ("POST", "/v1/users/u1/devices", b'{"user_id":"u1","token":' + deep(b"[", b"]") + b"}"),
    ("POST", "/v1/users/u1/inbox/read", b'{"ids":' + deep(b"[", b"]") + b"}"),
    ("PUT", "/v1/users/u1/settings", b'{"user_id":"u1","channels":'
     + deep(b'{"a":', b"}") + b"}"),
    ("PUT", "/v1/users/u1/settings", deep(b"[", b"]")),
])
def test_deep_people_bodies_are_a_422(method, url, body):
    """Their typed decoders (no ``Any`` field) stop at the first wrong type, before any
    depth; kept so a field that takes any JSON cannot bring the 500 back."""
    app, _ = app_and_bucket()
    r = call(app, method, url, body, USER)
    assert r.status_code == 422, r.text


def test_people_writes_are_rate_limited_per_user():
    """Every write route draws on the user's bucket; over it, 429 with Retry-After."""
    app, bucket = app_and_bucket()
    bad = b"{}"  # refused after the charge (422): the charge comes first
    writes = [("PUT", "/v1/users/u1/settings"), ("POST", "/v1/users/u1/devices"),
              ("POST", "/v1/users/u1/inbox/read")]
    assert [call(app, m, u, bad, USER).status_code for m, u in writes] == [422] * 3
    r = call(app, "DELETE", "/v1/users/u1/devices/d1", b"", USER)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert "writes/s" in r.json()["reason"]
    assert bucket.taken == {"u1": 4}
    u2 = {"Authorization": f"Bearer {create_token('u2', SECRET.encode(), 600)}"}
    assert call(app, "POST", "/v1/users/u2/devices", bad, u2).status_code == 422  # not u1's
