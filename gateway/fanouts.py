"""Fan-out in the gateway: job progress, presence, and the pull-on-read merge.

GET /v1/fanouts/{id} shows a fan-out job's progress while it runs.  Counters (expanded, routed now, deferred to pull-on-read, partitions done) come from the
flow's Redis hash ``nf:fanout:{id}``; outcomes (sent, suppressed, failed, ...) from the
receipts in ClickHouse via the loader.  The caller needs an API key whose scopes cover the
job's notification type (the producer that sent it), or "admin".

``on_inbox_read`` / ``on_device_registered`` are called from gateway/people.py: a user's
own app reading the inbox or registering a device publishes presence (notify.presence, at
most once per ``NOTIFLOW_PRESENCE_PUBLISH_EVERY_S``), and an inbox read first merges the
pull-on-read entries of the audiences the user follows (sinks/pull_feed.py).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse

from gateway import api_keys
from gateway.api_keys import ApiKey, api_key
from gateway.producer import OutRecord
from loader.client import Loader, LoaderError
from notiflow import topics
from notiflow.config import Settings, get_settings
from operators.fanout import summarize_progress
from operators.user_state import DEFAULT_ROW, row_with_settings
from schemas.errors import ValidationFailed
from schemas.presence import Presence, encode_presence
from schemas.settings import decode_settings
from sinks.pull_feed import FANOUT, Allow, merge_into_inbox_async, should_publish_presence

log = logging.getLogger(__name__)
SETTINGS_COPY = "nf:settings:"  # gateway/people.py's read copy of a user's settings

router = APIRouter(prefix="/v1/fanouts", tags=["fan-out"])

FanoutId = Annotated[str, Path(min_length=1, max_length=200,
                               description="the audience request's notification id")]


@router.get("/{fanout_id}", summary="Progress of a fan-out job")
async def fanout_progress(request: Request, fanout_id: FanoutId,
                          key: Annotated[ApiKey, Depends(api_key)]) -> JSONResponse:
    r: aioredis.Redis = request.app.state.redis
    try:
        raw = await r.hgetall(FANOUT + fanout_id)
    except aioredis.RedisError as e:
        raise HTTPException(503, {"error": "unavailable", "reason": f"redis: {e}"}) from None
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    if not fields:
        raise HTTPException(404, {"error": "not_found", "reason":
                                  f"fanout_id: no fan-out job {fanout_id!r} (not started, or expired)"})
    status = summarize_progress(fields)
    if not key.allows(str(status.get("type", ""))):
        raise HTTPException(403, {"error": "forbidden", "reason":
                                  f"scope: key {key.name!r} may not read {status.get('type')!r} jobs"})
    status["id"] = fanout_id
    status["outcomes"] = await _outcomes(request, fanout_id)
    return JSONResponse(status)


async def _outcomes(request: Request, nid: str) -> dict[str, int] | None:
    """Receipts by outcome, or None while the receipts store does not answer."""
    try:
        res = await Loader.from_settings(request.app.state.settings).arun(
            "fanout_outcomes", timeout=10, id=nid)
        return {o: n for o, n in res.rows}
    except (LoaderError, ValueError):
        return None


# --- presence and pull-on-read, called from gateway/people.py --------------------------------

def _cfg(request: Request) -> Settings:
    return getattr(request.app.state, "settings", None) or get_settings()


async def mark_present(request: Request, user_id: str) -> None:
    """Publish that the user's app is open (rate-limited per user); never fails the call."""
    cfg = _cfg(request)
    try:
        if not await should_publish_presence(request.app.state.redis, user_id,
                                             cfg.presence_publish_every_s):
            return
        value = encode_presence(Presence(user_id=user_id, seen_ms=int(time.time() * 1000)))
        rec = OutRecord(topics.name(topics.PRESENCE, cfg.topic_prefix), value,
                        user_id.encode(), topics.partition_for(user_id, cfg.partitions))
        await request.app.state.producer.send([rec])
    except Exception as e:  # noqa: BLE001 (presence is best effort: the read goes on)
        log.warning("presence for %s not published: %s", user_id, e)


async def _allow(r: aioredis.Redis, user_id: str) -> Allow | None:
    """The user's in-app preferences from the gateway's settings copy: a pull entry is
    merged only where a pushed one would have been (in-app on, type not opted out)."""
    raw = await r.get(SETTINGS_COPY + user_id)
    if raw is None:
        return None  # defaults: everything on
    try:
        row = row_with_settings(DEFAULT_ROW, decode_settings(raw))
    except ValidationFailed:
        return None
    if not row.channel_on("inapp"):
        return lambda _e: False
    return lambda e: row.opted_out(str(e.get("type", ""))) is None


async def on_inbox_read(request: Request, user_id: str) -> None:
    """Before an inbox page: presence (only for the user's own app, not an operator's
    read), then merge the pull-on-read entries into ``nf:inbox:{user}``."""
    if not api_keys.presented_key(request):
        await mark_present(request, user_id)
    cfg = _cfg(request)
    r: aioredis.Redis = request.app.state.redis
    try:
        await merge_into_inbox_async(r, user_id, inbox_max=cfg.inbox_max,
                                     marker_ttl_s=cfg.sent_marker_ttl_s, live=cfg.inapp_live,
                                     allow=await _allow(r, user_id))
    except aioredis.RedisError as e:
        log.warning("pull-on-read merge for %s failed: %s", user_id, e)  # the page says 503


async def on_device_registered(request: Request, user_id: str) -> None:
    await mark_present(request, user_id)
