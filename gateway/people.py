"""People's side of the gateway: settings, devices, inbox, badge, live alerts.

Every route acts for the one user named in the path, and only with that user's token
(gateway/user_tokens.py): a token for user A gets 403 on /v1/users/B/...  Operators'
API keys with the ``admin`` scope may *read* any user's inbox, badge and live stream
(the dashboard does); nothing here lets a key change a user's data.

Writes go where the flow reads them: settings to compacted ``notify.settings`` keyed by
user id, devices to ``notify.devices`` keyed ``user:token_id`` (a tombstone on DELETE),
both on the user's partition, acked by Kafka (200/201/204) or fsynced in the gateway's
spool while Kafka is away (202).  The flow keeps settings in its own state and a read copy
in Redis (``nf:settings:{user}``, from notify.settings); PUT writes that copy too, so the
user reads their change back at once.

Uses from app.state (gateway/app.py): ``settings``, ``redis`` (redis.asyncio) and
``producer`` (gateway/producer.GatewayProducer).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import msgspec
import orjson
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from gateway import api_keys, fanouts
from gateway.inbox import BadCursor, Inbox
from gateway.live import LiveSlots, open_stream
from gateway.producer import OutRecord
from gateway.user_tokens import (
    bearer,
    require_same_user,
    settings_of,
    token_user,
)
from notiflow import topics
from notiflow.config import Settings
from schemas.device import Device, decode_device, device_key
from schemas.errors import ValidationFailed, decode_or_reason
from schemas.limits import TOKEN_ID_RE, USER_ID_RE
from schemas.settings import UserSettings, decode_settings, encode_settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/users/{user_id}", tags=["people"])

SETTINGS_COPY = "nf:settings:"  # + user id: the gateway's read copy of the user's settings

Creds = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
UserId = Annotated[str, Path(pattern=USER_ID_RE.pattern, max_length=128,
                             description="the user this request acts for")]


# --- fan-out hooks: the single places that mark presence and merge pull-on-read -----

async def _before_inbox_read(request: Request, user_id: str) -> None:
    """Runs before GET inbox: mark the user present; merge pull-on-read entries into
    ``nf:inbox:{user}`` (at the head, INCRing the badge, as the in-app sink does)."""
    await fanouts.on_inbox_read(request, user_id)


async def _on_device_registered(request: Request, user_id: str) -> None:
    """Runs after a device registration is accepted: mark the user present."""
    await fanouts.on_device_registered(request, user_id)


# --- auth ------------------------------------------------------------------------------

@api_keys.declares_auth("the path's user's token")
async def owner(request: Request, user_id: UserId,
                creds: Creds) -> str:
    """Only the user themself (their token) may change their data."""
    if api_keys.presented_key(request):
        raise HTTPException(403, {"error": "forbidden", "reason": "authorization: API keys may "
                                  "not change a user's data; send the user's token"})
    require_same_user(token_user(request, creds), user_id)
    return user_id


@api_keys.declares_auth("the path's user's token, or an API key with the 'admin' scope")
async def reader(request: Request, user_id: UserId,
                 creds: Creds) -> str:
    """The user themself, or an operator key with the ``admin`` scope (read only)."""
    if api_keys.presented_key(request):
        key = await api_keys.authenticate(request)
        if not key.allows(api_keys.ADMIN):
            raise HTTPException(403, {"error": "forbidden", "reason": f"scope: key {key.name!r} "
                                      "lacks 'admin', needed to read a user's inbox"})
        return user_id
    require_same_user(token_user(request, creds), user_id)
    return user_id


Owner = Annotated[str, Depends(owner)]
Reader = Annotated[str, Depends(reader)]


@api_keys.declares_auth("the path's user's token, within the user's write rate")
async def writer(request: Request, user_id: Owner) -> str:
    """The user themself, within their write rate: every write reaches a flow lane (a
    device update is routed state), so one user's loop must not occupy the lanes.  A token
    bucket per user in Redis (``NOTIFLOW_PEOPLE_WRITES_PER_S``, burst
    ``NOTIFLOW_PEOPLE_WRITES_BURST``); 429 with Retry-After over it."""
    cfg = settings_of(request)
    state = request.app.state
    acquire = getattr(state, "people_try_acquire", None)
    if acquire is None:
        acquire = state.people_try_acquire = api_keys.make_try_acquire(_redis(request), "people")
    try:
        ok, wait_s = await acquire(user_id, cfg.people_writes_per_s, cfg.people_writes_burst)
    except aioredis.RedisError:
        ok, wait_s = True, 0.0  # limiter down: serve, as the API-key limiter does
    if not ok:
        raise HTTPException(429, {"error": "rate_limited", "reason": f"rate: user {user_id!r} "
                                  f"is over {cfg.people_writes_per_s:g} writes/s (burst "
                                  f"{cfg.people_writes_burst}); retry in {wait_s:.2f} s"},
                            headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
    return user_id


Writer = Annotated[str, Depends(writer)]


# --- helpers ---------------------------------------------------------------------------

def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers=headers, media_type="application/json")


def _bad(status: int, error: str, reason: str) -> HTTPException:
    return HTTPException(status, {"error": error, "reason": reason})


def _invalid(e: ValidationFailed) -> HTTPException:
    """400 for what is not JSON at all, 422 for JSON that breaks the schema."""
    if e.reason.startswith("payload: not valid JSON"):
        return _bad(400, "malformed", e.reason)
    return _bad(422, "invalid", e.reason)


def _redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


def _unavailable(what: str, e: Exception) -> HTTPException:
    return HTTPException(503, {"error": "unavailable", "reason": f"{what}: {e}"},
                         headers={"Retry-After": "1"})


def _inbox(request: Request) -> Inbox:
    """One Inbox (its scripts registered once) per app."""
    inbox = getattr(request.app.state, "people_inbox", None)
    if inbox is None:
        inbox = request.app.state.people_inbox = Inbox(_redis(request))
    return inbox


async def _body(request: Request, cfg: Settings) -> bytes:
    """The request body, refused with 413 as soon as it passes the limit (not after)."""
    limit = cfg.people_max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _bad(413, "too_large", f"body: {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _bad(413, "too_large", f"body: over the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise _bad(400, "malformed", "body: empty (send a JSON object)")
    return body


async def _publish(request: Request, topic: str, key: bytes, value: bytes | None,
                   user_id: str) -> str:
    """Produce to a user-keyed topic on the user's partition: "kafka" (acked) or "spool"."""
    cfg = settings_of(request)
    rec = OutRecord(topics.name(topic, cfg.topic_prefix), value, key,  # type: ignore[arg-type]
                    topics.partition_for(user_id, cfg.partitions))
    return await request.app.state.producer.send([rec])


def _inline_schema(struct: type) -> dict:
    """msgspec's JSON schema with its $defs inlined (OpenAPI would not resolve them)."""
    schema = msgspec.json.schema(struct)
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.rsplit("/", 1)[1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _body_doc(struct: type) -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline_schema(struct)}}}}


# --- settings --------------------------------------------------------------------------

@router.get("/settings", summary="The user's notification settings",
            responses={200: {"description": "stored settings, or the defaults "
                             "(X-Settings-Source says which)"}})
async def read_settings(request: Request, user_id: Owner) -> Response:
    try:
        raw = await _redis(request).get(SETTINGS_COPY + user_id)
    except aioredis.RedisError as e:
        raise _unavailable("settings store", e) from None
    if raw is None:
        body = encode_settings(UserSettings.defaults(user_id))
        return Response(body, media_type="application/json",
                        headers={"X-Settings-Source": "defaults"})
    return Response(raw, media_type="application/json", headers={"X-Settings-Source": "stored"})


@router.put("/settings", summary="Replace the user's notification settings",
            openapi_extra=_body_doc(UserSettings),
            responses={202: {"description": "accepted into the spool; Kafka is away"}})
async def replace_settings(request: Request, user_id: Writer) -> Response:
    cfg = settings_of(request)
    try:
        s = decode_settings(await _body(request, cfg))
    except ValidationFailed as e:
        raise _invalid(e) from None
    if s.user_id != user_id:
        raise _bad(422, "invalid", f"user_id: {s.user_id!r} does not match the path's {user_id!r}")
    value = encode_settings(s)
    where = await _publish(request, topics.SETTINGS, user_id.encode(), value, user_id)
    try:
        await _redis(request).set(SETTINGS_COPY + user_id, value)
    except aioredis.RedisError as e:
        # Kafka has it (the flow applies it); only GET's copy is stale: PUT again is safe
        raise _unavailable("settings published, but the read copy was not written", e) from None
    return Response(value, 200 if where == "kafka" else 202, media_type="application/json")


# --- devices ---------------------------------------------------------------------------

@router.post("/devices", summary="Register (or update) a device token",
             openapi_extra=_body_doc(Device), status_code=201,
             responses={202: {"description": "accepted into the spool; Kafka is away"}})
async def register_device(request: Request, user_id: Writer) -> Response:
    try:
        d = decode_device(await _body(request, settings_of(request)))
    except ValidationFailed as e:
        raise _invalid(e) from None
    if d.user_id != user_id:
        raise _bad(422, "invalid", f"user_id: {d.user_id!r} does not match the path's {user_id!r}")
    if not _valid_token_id(d.token_id):
        raise _bad(422, "invalid", f"token_id: must match {TOKEN_ID_RE.pattern}")
    where = await _publish(request, topics.DEVICES, device_key(d),
                           msgspec.json.encode(d), user_id)
    await _on_device_registered(request, user_id)
    return _json({"user_id": user_id, "token_id": d.token_id, "platform": d.platform,
                  "active": d.active}, 201 if where == "kafka" else 202)


@router.delete("/devices/{token_id}", summary="Forget a device (tombstone on notify.devices)",
               status_code=204,
               responses={202: {"description": "accepted into the spool; Kafka is away"}})
async def delete_device(request: Request, user_id: Writer,
                        token_id: Annotated[str, Path(pattern=TOKEN_ID_RE.pattern)]) -> Response:
    where = await _publish(request, topics.DEVICES, f"{user_id}:{token_id}".encode(), None,
                           user_id)
    return Response(status_code=204 if where == "kafka" else 202)


def _valid_token_id(token_id: str) -> bool:
    return TOKEN_ID_RE.fullmatch(token_id) is not None


# --- inbox, badge ----------------------------------------------------------------------

@router.get("/inbox", summary="The in-app inbox, newest first, with read flags")
async def get_inbox(request: Request, user_id: Reader,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
                    cursor: Annotated[str | None, Query(max_length=512)] = None) -> Response:
    cfg = settings_of(request)
    limit = min(limit, cfg.inbox_page_max)
    await _before_inbox_read(request, user_id)
    try:
        page = await _inbox(request).page(user_id, limit, cursor)
    except BadCursor as e:
        raise _bad(400, "bad_cursor", str(e)) from None
    except aioredis.RedisError as e:
        raise _unavailable("inbox store", e) from None
    return _json({"user_id": user_id, "entries": page.entries, "next_cursor": page.next_cursor,
                  "unread": page.unread, "total": page.total})


class MarkRead(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``{"ids": ["n1", ...]}`` marks those entries read; ``{"all": true}`` marks all."""

    ids: list[str] = []
    all: bool = False


_mark_decoder = msgspec.json.Decoder(MarkRead)
MARK_MAX_IDS = 1000


@router.post("/inbox/read", summary="Mark inbox entries read (some, or all)",
             openapi_extra=_body_doc(MarkRead))
async def mark_read(request: Request, user_id: Writer) -> Response:
    try:
        body: MarkRead = decode_or_reason(_mark_decoder, await _body(request, settings_of(request)))
    except ValidationFailed as e:
        raise _invalid(e) from None
    if body.all == bool(body.ids):
        raise _bad(422, "invalid", 'body: give either "ids" (a non-empty list) or "all": true')
    if len(body.ids) > MARK_MAX_IDS:
        raise _bad(422, "invalid", f"ids: {len(body.ids)} is over the limit of {MARK_MAX_IDS}")
    inbox = _inbox(request)
    try:
        if body.all:
            before = await inbox.mark_all_read(user_id)
            return _json({"user_id": user_id, "marked": before, "unread": 0, "missing": []})
        marked, badge, missing = await inbox.mark_read(user_id, list(dict.fromkeys(body.ids)))
    except aioredis.RedisError as e:
        raise _unavailable("inbox store", e) from None
    return _json({"user_id": user_id, "marked": marked, "unread": badge, "missing": missing})


@router.get("/badge", summary="Unread count")
async def get_badge(request: Request, user_id: Reader) -> Response:
    try:
        n = await _inbox(request).badge(user_id)
    except aioredis.RedisError as e:
        raise _unavailable("inbox store", e) from None
    return _json({"user_id": user_id, "unread": n})


# --- live ------------------------------------------------------------------------------

class _LiveResponse(StreamingResponse):
    """The SSE response; when it ends however it ends (client gone before the first
    byte included) it closes the stream (its Redis subscription) and gives its slot
    back (gateway/live.LiveSlots)."""

    def __init__(self, slots: LiveSlots, owner: str, stream: AsyncIterator[bytes]) -> None:
        super().__init__(stream, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._slots, self._owner = slots, owner
        self._stream = stream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give(self._owner)
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()  # type: ignore[attr-defined]


@router.get("/live", summary="New in-app alerts as Server-Sent Events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "event: inapp, data: inbox entry JSON"}})
async def live(request: Request, user_id: Reader,
               last_event_id: Annotated[str | None, Header(
                   max_length=256, description="resume after this notification id")] = None,
               ) -> StreamingResponse:
    cfg = settings_of(request)
    state = request.app.state
    slots: LiveSlots = state.live_slots
    key = getattr(request.state, "api_key", None)  # set by reader() for an operator's key
    owner = slots.owner(user_id, key.key_hash if key is not None else None)
    if (refused := slots.take(owner)) is not None:  # before the first await: no race
        status, reason = refused
        raise HTTPException(status, {"error": "unavailable" if status == 503 else
                                     "too_many_streams", "reason": reason},
                            headers={"Retry-After": "5"})
    try:
        stream = await open_stream(request, state.live_redis, user_id, cfg.inapp_live,
                                   cfg.sse_heartbeat_s, last_event_id)
    except BaseException as e:
        slots.give(owner)
        if isinstance(e, aioredis.RedisError):
            raise _unavailable("live feed", e) from None
        raise
    return _LiveResponse(slots, owner, stream)
