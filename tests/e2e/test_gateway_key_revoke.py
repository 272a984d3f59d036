"""Revoking API keys on a real Redis: one key at a time, never a prefix's worth by accident."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import redis.asyncio as aioredis

from gateway.api_keys import (
    HASH_SHOWN,
    KEYS_HASH,
    AmbiguousKey,
    create_key,
    hash_key,
    list_keys,
    revoke_key,
    revoke_plaintext,
)
from stack.services import ROOT, start_redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    svc = start_redis(tmp_path_factory.mktemp("redis-keys"))
    try:
        yield svc.url
    finally:
        svc.stop()


def run(redis_url: str, steps):
    async def go():
        r = aioredis.from_url(redis_url)
        try:
            await r.delete(KEYS_HASH)
            return await steps(r)
        finally:
            await r.aclose()

    return asyncio.run(go())


def test_a_short_prefix_revokes_nothing(redis_url):
    """Before: ``revoke d`` deleted every key whose hash starts with d."""

    async def steps(r):
        keys = [await create_key(r, f"svc{i}", ["*"], 1, 1) for i in range(32)]
        one_hex = hash_key(keys[0])[0]
        gone = await revoke_key(r, one_hex)
        return gone, len(await list_keys(r))

    assert run(redis_url, steps) == (0, 32)


def test_revoke_by_listed_hash_takes_exactly_that_key(redis_url):
    async def steps(r):
        a = await create_key(r, "a", ["*"], 1, 1)
        await create_key(r, "b", ["*"], 1, 1)
        gone = await revoke_key(r, hash_key(a)[:HASH_SHOWN])
        return gone, sorted(k["name"] for k in await list_keys(r))

    assert run(redis_url, steps) == (1, ["b"])


def test_a_name_shared_by_two_keys_is_refused(redis_url):
    async def steps(r):
        await create_key(r, "twin", ["*"], 1, 1)
        await create_key(r, "twin", ["*"], 1, 1)
        with pytest.raises(AmbiguousKey, match="2 keys"):
            await revoke_key(r, "twin")
        return len(await list_keys(r))

    assert run(redis_url, steps) == 2


def test_revoke_plaintext_takes_that_key_only(redis_url):
    async def steps(r):
        dev = await create_key(r, "dev", ["*"], 1, 1)
        await create_key(r, "dev", ["*"], 1, 1)
        first = await revoke_plaintext(r, dev)
        again = await revoke_plaintext(r, dev)
        return first, again, len(await list_keys(r))

    assert run(redis_url, steps) == (True, False, 1)


def test_cli_revoke_says_why_it_refused(redis_url):
    async def steps(r):
        for _ in range(2):
            await create_key(r, "shared", ["*"], 1, 1)

    run(redis_url, steps)
    out = subprocess.run([sys.executable, "-m", "gateway.api_keys", "--redis-url", redis_url,
                          "revoke", "shared"], capture_output=True, text=True, cwd=ROOT,
                         timeout=30)
    assert out.returncode == 2 and "2 keys" in out.stderr
