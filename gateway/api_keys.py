"""Producer API keys: stored hashed in Redis, scoped to notification types, rate-limited.

A key is ``nfk_`` + 32 random bytes (urlsafe base64), shown once when created.  Redis keeps
only ``sha256(key)`` as the field of the hash ``nf:apikeys``, with the key's name, scopes
and rate as JSON.  Why a plain sha256 and not bcrypt/argon2: those slow hashes protect
*low-entropy* secrets (passwords) from guessing; a 256-bit random key cannot be guessed, so a
leaked hash is as useless as a leaked bcrypt hash, while the look-up stays one O(1) HGET per
request instead of ~100 ms of CPU that would cap the gateway at a few requests per second.

Scopes are notification-type patterns: ``"*"`` (every type), ``"social.*"`` (``social`` and
every type under it), ``"social.like"`` (exactly that), plus ``"admin"`` for the operator
endpoints (dashboard data, any user's inbox) and ``"broadcast"`` for audience requests of
kind ``all`` (every user: a key for social likes must not be able to page the whole user
base) and so for every other audience too; ``"*"`` implies neither.

Audiences a key may address besides, none by default: ``"topic:sports"`` (that topic's
subscribers), ``"topic:*"`` (any topic), ``"followers:u42"``, ``"followers:*"``.

Rate: a key's bucket holds ``burst`` tokens refilled at ``rate`` a second, and every
notification costs one token per recipient; an audience request costs
``NOTIFLOW_GATEWAY_AUDIENCE_COST``.  A request costing more than ``burst`` is refused (413).

Keys travel as ``Authorization: Bearer nfk_...`` or ``X-API-Key: nfk_...``; the ``nfk_``
prefix tells them apart from people's user tokens on the same header.

    python -m gateway.api_keys create NAME --scope 'social.*' [--scope admin]
        [--audience 'topic:sports'] [--rate 100] [--burst 1000]
    python -m gateway.api_keys list | revoke NAME-OR-HASH-PREFIX
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

import orjson
import redis.asyncio as aioredis
from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPBearer

from schemas.limits import TYPE_RE
from schemas.request import AudienceKind

AUDIENCE_KINDS: tuple[str, ...] = get_args(AudienceKind)

KEYS_HASH = "nf:apikeys"
PREFIX = "nfk_"
ADMIN = "admin"
BROADCAST = "broadcast"
_EXPLICIT = (ADMIN, BROADCAST)  # never implied by a type pattern, not even "*"
# a key's name: in logs, `list` and error messages; short, printable, no separators
KEY_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
HASH_SHOWN = 12  # hex digits of a key's hash that `list` shows, and `revoke` needs at least
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    scopes: tuple[str, ...]
    rate: float  # notifications (recipients) per second
    burst: int
    key_hash: str
    audiences: tuple[str, ...] = ()

    def allows(self, scope: str) -> bool:
        return scope_allows(self.scopes, scope)

    def may_address(self, audience: str) -> bool:
        """Whether this key may send to ``audience`` ("topic:sports", "all", ...)."""
        if self.allows(BROADCAST):
            return True
        kind = audience.partition(":")[0]
        return audience != "all" and any(a in (audience, f"{kind}:*") for a in self.audiences)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_plaintext() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def scope_allows(scopes: tuple[str, ...] | list[str], wanted: str) -> bool:
    """Whether ``scopes`` cover ``wanted`` (a notification type, "admin" or "broadcast")."""
    if wanted in _EXPLICIT:
        return wanted in scopes
    for pat in scopes:
        if pat in _EXPLICIT:
            continue
        if pat == "*" or pat == wanted:
            return True
        if pat.endswith(".*") and (wanted == pat[:-2] or wanted.startswith(pat[:-1])):
            return True
    return False


def check_scope_pattern(pat: str) -> str:
    """Reject patterns that would never match (or match by accident) before storing them."""
    body = pat[:-2] if pat.endswith(".*") else pat
    if pat in ("*", *_EXPLICIT) or TYPE_RE.fullmatch(body):
        return pat
    raise ValueError(f"scope {pat!r}: use '*', 'admin', 'broadcast', a type like "
                     "'social.like' or 'social.*'")


def check_audience_pattern(pat: str) -> str:
    """``<kind>:<id>`` or ``<kind>:*`` for an audience kind a key may be granted."""
    kind, colon, ident = pat.partition(":")
    if (colon and kind in AUDIENCE_KINDS and kind != "all" and ident
            and len(ident.encode()) <= 200 and not any(c.isspace() for c in ident)):
        return pat
    raise ValueError(f"audience {pat!r}: use 'topic:NAME', 'topic:*', 'followers:USER' or "
                     "'followers:*' (audience 'all' needs the 'broadcast' scope)")


async def create_key(redis: aioredis.Redis, name: str, scopes: list[str],
                     rate: float, burst: int, audiences: list[str] | None = None) -> str:
    """Store a new key's hash and return the plaintext (the only time it exists)."""
    if not KEY_NAME_RE.fullmatch(name):
        raise ValueError(f"name: {name[:80]!r} must be 1 to 64 of A-Z a-z 0-9 . _ -")
    if not scopes:
        raise ValueError("scopes: give at least one (--scope '*' for every type)")
    scopes = [check_scope_pattern(s) for s in scopes]
    audiences = [check_audience_pattern(a) for a in audiences or ()]
    if rate <= 0 or burst < 1:
        raise ValueError("rate must be > 0 and burst >= 1")
    plaintext = new_plaintext()
    record = {"name": name, "scopes": scopes, "audiences": audiences, "rate": rate,
              "burst": burst, "created_ms": int(time.time() * 1000)}
    await redis.hset(KEYS_HASH, hash_key(plaintext), orjson.dumps(record))
    return plaintext


async def list_keys(redis: aioredis.Redis) -> list[dict]:
    rows = await redis.hgetall(KEYS_HASH)
    return [{"hash": h.decode()[:HASH_SHOWN], **orjson.loads(v)} for h, v in rows.items()]


class AmbiguousKey(ValueError):
    """A revoke that names more than one key: none is revoked."""


async def revoke_key(redis: aioredis.Redis, ident: str) -> int:
    """Revoke the one key named ``ident``, or whose hash starts with ``ident`` (at least
    HASH_SHOWN hex digits, as `list` shows them); 0 when none matches.  Never more than
    one: a name shared by several keys, or a prefix several hashes share, raises
    AmbiguousKey listing them, so a revoke cannot take keys nobody meant."""
    rows = await redis.hgetall(KEYS_HASH)
    by_prefix = len(ident) >= HASH_SHOWN
    hits = [h for h, v in rows.items()
            if orjson.loads(v).get("name") == ident or (by_prefix and h.decode().startswith(ident))]
    if len(hits) > 1:
        raise AmbiguousKey(f"{ident!r} names {len(hits)} keys (hashes "
                           f"{', '.join(sorted(h.decode()[:HASH_SHOWN] for h in hits))}): "
                           "revoke one by its hash")
    return int(await redis.hdel(KEYS_HASH, *hits)) if hits else 0


async def revoke_plaintext(redis: aioredis.Redis, plaintext: str) -> bool:
    """Revoke exactly this key (its holder knows it): True if it existed."""
    return bool(await redis.hdel(KEYS_HASH, hash_key(plaintext)))


class KeyStore:
    """Look keys up by hash, with a short in-process cache (a revoke takes ``cache_s``)."""

    def __init__(self, redis: aioredis.Redis, cache_s: float, default_rate: float,
                 default_burst: int) -> None:
        self._redis = redis
        self._cache_s = cache_s
        self._default = (default_rate, default_burst)
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def lookup(self, plaintext: str) -> ApiKey | None:
        h = hash_key(plaintext)
        now = time.monotonic()
        hit = self._cache.get(h)
        if hit is not None and hit[0] > now:
            return hit[1]
        raw = await self._redis.hget(KEYS_HASH, h)
        key = None
        if raw is not None:
            rec = orjson.loads(raw)
            key = ApiKey(name=rec["name"], scopes=tuple(rec.get("scopes", ())),
                         rate=float(rec.get("rate") or self._default[0]),
                         burst=int(rec.get("burst") or self._default[1]), key_hash=h,
                         audiences=tuple(rec.get("audiences", ())))
        if len(self._cache) > 10_000:  # bounded: unknown keys must not grow it forever
            self._cache.clear()
        self._cache[h] = (now + self._cache_s, key)
        return key


# --- rate limiting: one Redis token bucket per key, shared by every gateway process -------

TryAcquire = Callable[..., Awaitable[tuple[bool, float]]]


def make_try_acquire(redis: aioredis.Redis, kind: str = "apikey") -> TryAcquire:
    """``try_acquire(bucket, rate, burst, n=1) -> (granted, wait_s)``: all ``n`` tokens or
    none, non-blocking and atomic.

    One ``sinks.rate_limit.AsyncTokenBucket`` per bucket (Redis ``nf:rl:<kind>:<bucket>``:
    an API key's hash, or a user id for the people's API writes), the same atomic script
    the provider limits use; rebuilt when a bucket's rate changes."""
    from sinks.rate_limit import AsyncTokenBucket

    buckets: dict[str, AsyncTokenBucket] = {}

    async def try_acquire(bucket: str, rate: float, burst: int, n: int = 1
                          ) -> tuple[bool, float]:
        b = buckets.get(bucket)
        if b is None or b.rate_per_s != rate or b.burst != burst:
            if len(buckets) > 10_000:
                buckets.clear()
            b = buckets[bucket] = AsyncTokenBucket(redis, f"{kind}:{bucket}", rate, burst)
        return await b.try_acquire(n)

    return try_acquire


# --- FastAPI dependencies ------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer nfk_...")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="or X-API-Key: nfk_...")
# declared so the OpenAPI spec lists both ways to send a key (authenticate reads them)
_security_b = Depends(_bearer)
_security_h = Depends(_header)


def declares_auth(who: str) -> Callable[[_F], _F]:
    """Mark a FastAPI dependency as the one that decides who may call a route; ``who``
    says it in words.  Every route needs one or a place in gateway.app.PUBLIC (a test
    walks every route)."""

    def mark(fn: _F) -> _F:
        fn.__auth__ = who  # type: ignore[attr-defined]
        return fn

    return mark


def _deny(status: int, error: str, reason: str, headers: dict[str, str] | None = None):
    return HTTPException(status, {"error": error, "reason": reason}, headers=headers)


def presented_key(request: Request) -> str | None:
    """The ``nfk_`` key on the request, if any (a user token on the same header is not one)."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, cred = auth.partition(" ")
    if scheme.lower() == "bearer" and cred.strip().startswith(PREFIX):
        return cred.strip()
    return None


async def authenticate(request: Request) -> ApiKey:
    """The caller's API key (401 if missing or unknown), after its rate limit (429)."""
    plaintext = presented_key(request)
    if not plaintext:
        raise _deny(401, "unauthorized", "authorization: missing API key "
                    "(send 'Authorization: Bearer nfk_...' or 'X-API-Key')",
                    {"WWW-Authenticate": "Bearer"})
    if not plaintext.startswith(PREFIX) or len(plaintext) > 200:
        raise _deny(401, "unauthorized", "authorization: not an API key (they start with nfk_)",
                    {"WWW-Authenticate": "Bearer"})
    state = request.app.state
    try:
        key = await state.key_store.lookup(plaintext)
    except aioredis.RedisError as e:
        raise _deny(503, "unavailable", f"authorization: key store unreachable ({e})",
                    {"Retry-After": "1"}) from None
    if key is None:
        raise _deny(401, "unauthorized", "authorization: unknown or revoked API key",
                    {"WWW-Authenticate": "Bearer"})
    await charge(request, key, 1, paid=0)
    request.state.api_key = key
    return key


async def charge(request: Request, key: ApiKey, n: int, paid: int = 1) -> None:
    """Charge a request that costs ``n`` tokens of its key's bucket, ``paid`` of them taken
    already (authenticate takes one): 429 while the bucket lacks them, 413 if it never can
    hold them."""
    if n > key.burst:
        raise _deny(413, "too_large", f"rate: this request costs {n} notifications, over key "
                    f"{key.name!r}'s burst of {key.burst}: split it")
    if n <= paid:
        return
    try:
        ok, wait_s = await request.app.state.try_acquire(key.key_hash[:16], key.rate,
                                                         key.burst, n - paid)
    except aioredis.RedisError:
        ok, wait_s = True, 0.0  # limiter down: serve rather than refuse everyone
    if not ok:
        retry = max(1, math.ceil(wait_s))
        raise _deny(429, "rate_limited", f"rate: key {key.name!r} is over {key.rate:g} "
                    f"notifications/s (burst {key.burst}); retry in {wait_s:.2f} s",
                    {"Retry-After": str(retry)})


def require_scope(scope: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """A FastAPI dependency: the caller's key, 403 unless its scopes cover ``scope``.

    ``Depends(require_scope("admin"))`` guards operator endpoints; for notification types
    the gateway checks each request's ``type`` itself (a batch mixes types)."""

    @declares_auth(f"API key with the {scope!r} scope")
    async def dependency(request: Request, _b=_security_b, _h=_security_h) -> ApiKey:
        key = await authenticate(request)
        if not key.allows(scope):
            raise _deny(403, "forbidden", f"scope: key {key.name!r} may not use {scope!r} "
                        f"(its scopes: {', '.join(key.scopes)})")
        return key

    return dependency



@declares_auth("API key (the route checks its scopes)")
async def api_key(request: Request, _b=_security_b, _h=_security_h) -> ApiKey:
    """A FastAPI dependency: any valid key (scopes checked by the caller)."""
    return await authenticate(request)


# --- CLI -------------------------------------------------------------------------------------

def _redis_url() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    from notiflow.local_stack import ROOT, read_env_file

    env = read_env_file(ROOT)
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    from notiflow.config import get_settings

    return get_settings().redis_url


async def _cli(args: argparse.Namespace) -> int:
    from notiflow.config import get_settings

    r = aioredis.from_url(args.redis_url or _redis_url())
    try:
        if args.cmd == "create":
            cfg = get_settings()
            key = await create_key(r, args.name, args.scope or ["*"],
                                   args.rate or cfg.gateway_default_rate,
                                   args.burst or cfg.gateway_default_burst, args.audience)
            print(key)
            print(f"# {args.name}: scopes {args.scope or ['*']}, audiences "
                  f"{args.audience or []}; shown once, store it now", file=sys.stderr)
        elif args.cmd == "list":
            for k in await list_keys(r):
                print(orjson.dumps(k).decode())
        elif args.cmd == "revoke":
            n = await revoke_key(r, args.name)
            print(f"revoked {n} key", file=sys.stderr)
            return 0 if n else 1
        return 0
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        await r.aclose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateway.api_keys", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis-url", default="", help="default: REDIS_URL, then var/stack.env")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="create a key and print it once")
    c.add_argument("name")
    c.add_argument("--scope", action="append",
                   help="type pattern ('social.*', '*' for every type), 'admin' (operator "
                        "endpoints) or 'broadcast' (audience 'all', and so every audience); "
                        "repeatable; default '*'")
    c.add_argument("--audience", action="append",
                   help="an audience the key may address: 'topic:NAME', 'topic:*', "
                        "'followers:USER' or 'followers:*' (repeatable; default none)")
    c.add_argument("--rate", type=float, default=0,
                   help="notifications (recipients) per second (default from settings)")
    c.add_argument("--burst", type=int, default=0,
                   help="most notifications at once, and so the largest request (default "
                        "from settings)")
    sub.add_parser("list", help="names, scopes and hash prefixes (never the keys)")
    rv = sub.add_parser("revoke", help="revoke one key by its name or hash prefix (12+ "
                        "characters, from list); refuses when that names several keys")
    rv.add_argument("name")
    return asyncio.run(_cli(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
