"""POST /v1/notifications (one) and /v1/notifications/batch (up to 1000): validate, 202.

The body is the Kafka wire request (schemas/request.py, same decoder and rules as the
flow), except that ``id`` and ``created_at`` may be left out: the gateway fills them in.
A request is produced to ``notify.critical`` (priority critical) or ``notify.requests``,
keyed by its first recipient (or the audience name) on that user's partition; the flow
splits multi-recipient requests and expands audiences.  ``producer`` is always the API
key's namespace (schemas/identity.py), whatever the body says: one key's ids and dedup
parts never meet another key's in dedup or in the sent-markers.

``Idempotency-Key`` (single requests): the first request with a given key (per API key)
fixes the notification id, kept in Redis for ``gateway_idempotency_ttl_s``, and every
later one is answered with that id.  Unless the request names ``dedup`` parts itself, the
key also becomes them (actor ``key:`` + a digest of the API key's name, object ``idem:`` +
a digest of the Idempotency-Key: digests, so they always fit the contract's limits), so the
flow's dedup (type|actor|object|recipient) drops the repeats.  Every request is
still produced: a client retrying because it never saw the 202 must not lose its request.

Cost: a request takes one token of its key's rate bucket per recipient (an audience request
``NOTIFLOW_GATEWAY_AUDIENCE_COST``), so a batch of 1,000 requests to 1,000 users each costs
a million, not one (gateway/api_keys.py).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Annotated, Any

import msgspec
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from gateway.api_keys import BROADCAST, ApiKey, api_key, charge
from gateway.producer import OutRecord
from notiflow import metrics
from notiflow.logs import get_logger
from notiflow.topics import CRITICAL, REQUESTS, name, partition_for
from schemas.errors import TOO_DEEP, ValidationFailed, decode_json, field_reason
from schemas.identity import gateway_producer
from schemas.limits import TYPE_RE, USER_ID_RE
from schemas.request import (
    MAX_RECIPIENTS,
    DedupParts,
    NotificationRequest,
    check_request,
    encode_request,
    is_critical,
)

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])
log = get_logger("gateway.notifications")

MAX_IDEMPOTENCY_KEY = 255


def error(status: int, err: str, reason: str, headers: dict[str, str] | None = None):
    return HTTPException(status, {"error": err, "reason": reason}, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (never buffered whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise error(413, "too_large", f"payload: {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise error(413, "too_large", f"payload: over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise error(400, "malformed", "payload: empty body (send a JSON object)")
    try:
        return decode_json(raw)
    except ValidationFailed as e:  # 400 for what is not JSON, 422 for JSON nested too deeply
        if e.reason == TOO_DEEP:
            raise error(422, "invalid", e.reason) from None
        raise error(400, "malformed", e.reason) from None


def to_request(obj: Any, now_ms: int, producer: str = "") -> NotificationRequest:
    """A decoded JSON value -> a validated request (id and created_at filled when absent),
    in ``producer``'s namespace whatever the body says (schemas/identity.py)."""
    if not isinstance(obj, dict):
        raise ValidationFailed(f"payload: expected a JSON object, got {type(obj).__name__}")
    obj["producer"] = producer
    if "id" not in obj:
        obj["id"] = uuid.uuid4().hex
    if "created_at" not in obj:
        obj["created_at"] = now_ms
    try:
        req = msgspec.convert(obj, NotificationRequest)
    except msgspec.ValidationError as e:
        raise ValidationFailed(field_reason(str(e))) from None
    except RecursionError:
        raise ValidationFailed(TOO_DEEP) from None
    check_request(req)
    return req


def check_size(req: NotificationRequest, value: bytes, limit: int) -> None:
    if len(value) > limit:
        raise ValidationFailed(f"payload: {len(value)} bytes is over the {limit}-byte limit")


def to_record(req: NotificationRequest, value: bytes, partitions: int, prefix: str) -> OutRecord:
    topic = name(CRITICAL if is_critical(req.priority) else REQUESTS, prefix)
    key = req.recipients[0] if req.recipients else (req.audience.key() if req.audience else req.id)
    return OutRecord(topic, value, key.encode(), partition_for(key, partitions))


def scope_problem(key: ApiKey, req: NotificationRequest) -> str | None:
    """Why ``key`` may not send ``req`` (None: it may).  The type must be in its scopes,
    and an audience among the key's audiences (audience "all": the "broadcast" scope)."""
    if not key.allows(req.type):
        return f"type: key {key.name!r} may not send {req.type!r} (its scopes: {', '.join(key.scopes)})"
    if req.audience is not None and not key.may_address(req.audience.key()):
        if req.audience.kind == "all":
            return (f"audience: key {key.name!r} may not broadcast to all users "
                    f"(needs the {BROADCAST!r} scope)")
        return (f"audience: key {key.name!r} may not address {req.audience.key()!r} (its "
                f"audiences: {', '.join(key.audiences) or 'none'})")
    return None


def cost(req: NotificationRequest, audience_cost: int) -> int:
    """Rate tokens a request takes: one per recipient, a fixed price for an audience."""
    return audience_cost if req.audience is not None else len(req.recipients)


def lane_of(record: OutRecord) -> str:
    return "critical" if record.topic.endswith(CRITICAL) else "bulk"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def idempotency_dedup(key: ApiKey, idem: str) -> DedupParts:
    """The dedup parts an Idempotency-Key stands for.  Digests, not the texts: a 255-character
    header can be 1 KB of UTF-8 and a key name anything, and the flow re-checks the dedup
    parts' limits (256 bytes each): a 202 here must never become a rejection there."""
    return DedupParts(actor=f"key:{_digest(key.name)}", object=f"idem:{_digest(idem)}")


async def idempotent_id(redis: aioredis.Redis, key: ApiKey, idem: str, nid: str,
                        ttl_s: int) -> str:
    """The id the first request with ``idem`` got (this one's ``nid`` if it is the first)."""
    rkey = f"nf:idem:{key.key_hash[:16]}:{_digest(idem)}"
    try:
        if await redis.set(rkey, nid, nx=True, ex=ttl_s):
            return nid
        got = await redis.get(rkey)
    except aioredis.RedisError as e:
        raise error(503, "unavailable", f"idempotency-key: store unreachable ({e})",
                    {"Retry-After": "1"}) from None
    return got.decode() if got is not None else nid


_REF = "#/components/schemas/{name}"
_EXAMPLE = {"type": "social.like", "recipients": ["u1"], "channels": ["push", "inapp"],
            "collapse_key": "like:photo9", "dedup": {"actor": "u7", "object": "photo9"},
            "title": "New like", "body": "Ann liked your photo"}
_ERROR = {"content": {"application/json": {"schema": {"$ref": _REF.format(name="Error")}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed JSON", **_ERROR},
    401: {"description": "missing or unknown API key", **_ERROR},
    403: {"description": "the key's scopes do not cover this type, or its audiences this "
                        "audience", **_ERROR},
    413: {"description": "body over the size limit, or costs more than the key's burst",
          **_ERROR},
    422: {"description": "invalid request (reason names the field)", **_ERROR},
    429: {"description": "over the key's rate, one token a recipient (see Retry-After)",
          **_ERROR},
    503: {"description": "Redis (keys, idempotency) unreachable", **_ERROR},
}


@router.post(
    "", status_code=202, summary="Submit one notification",
    responses={202: {"description": "accepted: in Kafka or in the gateway's spool",
                     "content": {"application/json": {"schema": {"$ref": _REF.format(name="Accepted")}}}},
               **_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": _REF.format(name="GatewayRequest")}, "example": _EXAMPLE}}}},
)
async def submit(request: Request, key: Annotated[ApiKey, Depends(api_key)],
                 idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY)] = None):
    state = request.app.state
    cfg = state.settings
    raw = await read_body(request, cfg.max_request_bytes)
    obj = parse_json(raw)
    try:
        req = to_request(obj, int(time.time() * 1000), gateway_producer(key.key_hash))
    except ValidationFailed as e:
        raise error(422, "invalid", e.reason) from None
    if (why := scope_problem(key, req)) is not None:
        raise error(403, "forbidden", why)
    await charge(request, key, cost(req, cfg.gateway_audience_cost))
    if idempotency_key is not None:
        idem = idempotency_key.strip()
        if not idem:
            raise error(400, "malformed", "idempotency-key: must not be empty")
        nid = await idempotent_id(state.redis, key, idem, req.id, cfg.gateway_idempotency_ttl_s)
        dedup = req.dedup or idempotency_dedup(key, idem)
        req = msgspec.structs.replace(req, id=nid, dedup=dedup)
    value = encode_request(req)
    try:
        check_size(req, value, cfg.max_request_bytes)
    except ValidationFailed as e:
        raise error(413, "too_large", e.reason) from None
    record = to_record(req, value, cfg.partitions, cfg.topic_prefix)
    via = await state.producer.send([record])
    metrics.GATEWAY_ACCEPTED.labels(lane_of(record), via).inc()
    if cfg.gateway_log_requests:
        log.info("accepted", id=req.id, type=req.type, key=key.name, priority=req.priority,
                 topic=record.topic, via=via)
    return JSONResponse({"id": req.id, "via": via}, status_code=202)


@router.post(
    "/batch", status_code=202, summary="Submit up to 1000 notifications",
    responses={202: {"description": "at least one accepted; results per request, in order",
                     "content": {"application/json": {"schema": {"$ref": _REF.format(name="BatchResult")}}}},
               **{**_ERRORS, 422: {"description": "none accepted (results say why) or the "
                                   "body is not a batch", "content": {"application/json": {
                                       "schema": {"anyOf": [{"$ref": _REF.format(name="BatchResult")},
                                                            {"$ref": _REF.format(name="Error")}]}}}}}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": _REF.format(name="GatewayBatch")},
        "example": {"requests": [_EXAMPLE, {**_EXAMPLE, "recipients": ["u2"]}]}}}}},
)
async def submit_batch(request: Request, key: Annotated[ApiKey, Depends(api_key)]):
    state = request.app.state
    cfg = state.settings
    obj = parse_json(await read_body(request, cfg.gateway_max_batch_bytes))
    items = obj.get("requests") if isinstance(obj, dict) else None
    if not isinstance(items, list):
        raise error(422, "invalid", 'requests: required, a list of requests ({"requests": [...]})')
    if not items:
        raise error(422, "invalid", "requests: must not be empty")
    if len(items) > cfg.gateway_max_batch:
        raise error(413, "too_large", f"requests: {len(items)} is over the batch limit "
                    f"of {cfg.gateway_max_batch}")
    now = int(time.time() * 1000)
    producer = gateway_producer(key.key_hash)
    results: list[dict[str, Any]] = []
    records: list[OutRecord] = []
    ids: list[tuple[str, str]] = []
    price = 0
    for i, item in enumerate(items):
        try:
            req = to_request(item, now, producer)
            value = encode_request(req)
            check_size(req, value, cfg.max_request_bytes)
        except ValidationFailed as e:
            results.append({"index": i, "error": "invalid", "reason": e.reason})
            continue
        if (why := scope_problem(key, req)) is not None:
            results.append({"index": i, "error": "forbidden", "reason": why})
            continue
        records.append(to_record(req, value, cfg.partitions, cfg.topic_prefix))
        ids.append((req.id, req.type))
        price += cost(req, cfg.gateway_audience_cost)
        results.append({"index": i, "id": req.id})
    body = {"accepted": len(records), "rejected": len(items) - len(records), "results": results}
    if not records:
        metrics.GATEWAY_REJECTED.labels("422", "invalid").inc()
        return JSONResponse(body, status_code=422)
    await charge(request, key, price)
    via = await state.producer.send(records)
    for r in records:
        metrics.GATEWAY_ACCEPTED.labels(lane_of(r), via).inc()
    if cfg.gateway_log_requests:
        for (nid, typ), r in zip(ids, records, strict=True):
            log.info("accepted", id=nid, type=typ, key=key.name, topic=r.topic, via=via, batch=True)
    body["via"] = via
    return JSONResponse(body, status_code=202)


def openapi_components() -> dict[str, Any]:
    """Schemas the routes above refer to, from the msgspec wire types (one source of truth)."""
    (_req,), comps = msgspec.json.schema_components((NotificationRequest,), ref_template=_REF)
    gw = dict(comps["NotificationRequest"])
    gw["required"] = [f for f in gw.get("required", []) if f not in ("id", "created_at")]
    # the rules check_request adds, where JSON Schema can say them (docs, and the fuzz)
    props = gw["properties"] = {k: dict(v) for k, v in gw["properties"].items()}
    props["type"].update(pattern=TYPE_RE.pattern)
    props["id"].update(minLength=1)
    props["v"] = {"type": "integer", "enum": [1], "default": 1}
    props["created_at"].update(minimum=1)
    props.pop("producer", None)  # the gateway sets it from the API key
    props["recipients"] = {**props["recipients"], "maxItems": MAX_RECIPIENTS,
                           "items": {"type": "string", "pattern": USER_ID_RE.pattern}}
    gw["description"] = ("A notification request (schemas/request.py); the gateway fills "
                         "`id` and `created_at` when they are left out.")
    comps["GatewayRequest"] = gw
    comps["GatewayBatch"] = {
        "type": "object", "required": ["requests"],
        "properties": {"requests": {"type": "array", "minItems": 1, "maxItems": 1000,
                                    "items": {"$ref": _REF.format(name="GatewayRequest")}}}}
    comps["Accepted"] = {
        "type": "object", "required": ["id", "via"],
        "properties": {"id": {"type": "string"},
                       "via": {"type": "string", "enum": ["kafka", "spool"]}}}
    comps["Error"] = {
        "type": "object", "required": ["error", "reason"],
        "properties": {"error": {"type": "string"},
                       "reason": {"type": "string", "description": "<field>: <problem>"}}}
    comps["BatchResult"] = {
        "type": "object", "required": ["accepted", "rejected", "results"],
        "properties": {
            "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
            "via": {"type": "string", "enum": ["kafka", "spool"]},
            "results": {"type": "array", "items": {"type": "object", "required": ["index"],
                        "properties": {"index": {"type": "integer"}, "id": {"type": "string"},
                                       "error": {"type": "string"},
                                       "reason": {"type": "string"}}}}}}
    return comps
