"""Open live streams (SSE) must not starve the rest of the gateway of Redis connections.

In ``user`` live mode each stream holds a Redis pub/sub connection for as long as it is
open.  Those come from their own pool, capped by ``NOTIFLOW_GATEWAY_LIVE_MAX_STREAMS``: one
stream over the cap gets 503 with a reason, and every other route keeps its own pool
(``NOTIFLOW_GATEWAY_REDIS_CONNECTIONS``).  One user, or one API key, may hold only a few
of those slots (429 over its share), so nobody can take them all.  A real gateway process,
the session's Redis.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from gateway.api_keys import create_key
from gateway.user_tokens import create_token

SECRET = secrets.token_urlsafe(32)  # the gateway refuses short ones
POOL = 3  # NOTIFLOW_GATEWAY_REDIS_CONNECTIONS of the gateway under test
STREAMS = 4  # NOTIFLOW_GATEWAY_LIVE_MAX_STREAMS
PER_USER = 2  # NOTIFLOW_GATEWAY_LIVE_MAX_PER_USER
PER_KEY = 3  # NOTIFLOW_GATEWAY_LIVE_MAX_PER_KEY


@pytest.fixture(scope="module")
def gateway(stack, tmp_path_factory):
    from stack.services import start_gateway

    work = tmp_path_factory.mktemp("gateway-live")
    env = {**stack.env(), "NOTIFLOW_USER_TOKEN_SECRET": SECRET,
           "NOTIFLOW_GATEWAY_SPOOL_DIR": str(work / "spool"),
           "NOTIFLOW_GATEWAY_REDIS_CONNECTIONS": str(POOL),
           "NOTIFLOW_GATEWAY_LIVE_MAX_STREAMS": str(STREAMS),
           "NOTIFLOW_GATEWAY_LIVE_MAX_PER_USER": str(PER_USER),
           "NOTIFLOW_GATEWAY_LIVE_MAX_PER_KEY": str(PER_KEY),
           "NOTIFLOW_GATEWAY_LOG_REQUESTS": "false"}
    svc = start_gateway(env, log_dir=work, name="gateway-live")
    try:
        yield svc.url
    finally:
        svc.stop()


def _auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(user, SECRET.encode(), 600)}"}


async def _open_streams(url: str, n: int) -> tuple[list[int], int, int]:
    """Open ``n`` live streams (kept open), then read a badge and open one more stream:
    (statuses of the n streams, the badge's status, the extra stream's status)."""
    users = [f"live-{uuid.uuid4().hex[:8]}" for _ in range(n + 1)]
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(15, read=None)) as c:
        streams = []
        try:
            for u in users[:n]:
                cm = c.stream("GET", f"/v1/users/{u}/live", headers=_auth(u))
                streams.append((cm, await cm.__aenter__()))
            statuses = [resp.status_code for _cm, resp in streams]
            badge = await c.get(f"/v1/users/{users[0]}/badge", headers=_auth(users[0]),
                                timeout=4)
            extra = await c.get(f"/v1/users/{users[n]}/live", headers=_auth(users[n]),
                                timeout=4) if n >= STREAMS else None
            return statuses, badge.status_code, (extra.status_code if extra else 0)
        finally:
            for cm, _resp in reversed(streams):
                await cm.__aexit__(None, None, None)


def test_open_streams_leave_other_routes_their_connections(gateway):
    statuses, badge, _ = asyncio.run(_open_streams(gateway, POOL + 1))
    assert statuses == [200] * (POOL + 1)
    assert badge == 200  # not a 5 s wait for a pooled connection, then 503


def test_streams_over_the_cap_get_503_with_a_reason(gateway):
    statuses, badge, extra = asyncio.run(_open_streams(gateway, STREAMS))
    assert statuses == [200] * STREAMS and badge == 200
    assert extra == 503


async def _hold(url: str, paths_headers: list[tuple[str, dict[str, str]]],
                then: tuple[str, dict[str, str]]) -> tuple[list[int], int, int]:
    """Open every stream (kept open), then try ``then``: (their statuses, its status, and
    its status again once the first stream is closed)."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(15, read=None)) as c:
        streams = []
        try:
            for path, headers in paths_headers:
                cm = c.stream("GET", path, headers=headers)
                streams.append((cm, await cm.__aenter__()))
            statuses = [resp.status_code for _cm, resp in streams]
            async with c.stream("GET", then[0], headers=then[1]) as over:
                if over.status_code == 429:
                    assert "close one first" in orjson.loads(await over.aread())["reason"]
            cm, _resp = streams.pop(0)
            await cm.__aexit__(None, None, None)
            # the closed stream's slot comes back once the server has seen it go
            for _ in range(100):
                async with c.stream("GET", then[0], headers=then[1]) as again:
                    if again.status_code != 429:
                        return statuses, over.status_code, again.status_code
                await asyncio.sleep(0.05)
            return statuses, over.status_code, 429
        finally:
            for cm, _resp in reversed(streams):
                await cm.__aexit__(None, None, None)


def test_one_user_cannot_take_every_stream(gateway):
    user = f"live-{uuid.uuid4().hex[:8]}"
    path = (f"/v1/users/{user}/live", _auth(user))
    statuses, over, after_close = asyncio.run(_hold(gateway, [path] * PER_USER, path))
    assert statuses == [200] * PER_USER
    assert over == 429  # before: 200, up to NOTIFLOW_GATEWAY_LIVE_MAX_STREAMS
    assert after_close == 200


def test_one_api_key_cannot_take_every_stream(gateway, stack):
    async def admin_key() -> str:
        r = aioredis.from_url(stack.redis_url)
        try:
            return await create_key(r, f"live-ops-{uuid.uuid4().hex[:6]}", ["admin"], 100, 100)
        finally:
            await r.aclose()

    ops = {"X-API-Key": asyncio.run(admin_key())}
    users = [f"live-{uuid.uuid4().hex[:8]}" for _ in range(PER_KEY + 1)]
    statuses, over, after_close = asyncio.run(_hold(
        gateway, [(f"/v1/users/{u}/live", ops) for u in users[:PER_KEY]],
        (f"/v1/users/{users[-1]}/live", ops)))
    assert statuses == [200] * PER_KEY
    assert over == 429
    assert after_close == 200
