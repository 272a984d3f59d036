"""Notification request, version 1: what producers publish to notify.requests / notify.critical.

Example::

    {"v": 1, "id": "n-1", "type": "social.like", "priority": "normal",
     "recipients": ["u1"], "channels": ["push", "inapp"], "collapse_key": "like:photo9",
     "dedup": {"actor": "u7", "object": "photo9"},
     "title": "New like", "body": "Ann liked your photo", "data": {"photo": "9"},
     "created_at": 1764050000000, "expires_at": 1764136400000}

Times are epoch milliseconds (UTC).  ``channels`` omitted means the default channels
(push + in-app).  ``template`` + ``data`` may replace ``title``/``body``.

Instead of ``recipients`` a request can name an ``audience``, expanded inside the flow::

    {"audience": {"kind": "followers", "id": "u42"}}   # everyone following user u42
    {"audience": {"kind": "topic", "id": "sports"}}    # subscribers of a topic
    {"audience": {"kind": "all"}}                       # a broadcast (combine with send_at)

``send_at`` (epoch ms, future) holds the notification until then, like quiet hours do.
``producer`` names whose ids and dedup parts these are (schemas/identity.py): the gateway
sets its API key's; producers writing to Kafka set their own ("" is the shared namespace).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from schemas.errors import ValidationFailed, decode_or_reason
from schemas.identity import Event, identity
from schemas.limits import (
    CONTROL_RE,
    MAX_AUDIENCE_ID_BYTES,
    MAX_BODY_BYTES,
    MAX_COLLAPSE_KEY_BYTES,
    MAX_DEDUP_PART_BYTES,
    MAX_EPOCH_MS,
    MAX_ID_BYTES,
    MAX_TEMPLATE_BYTES,
    MAX_TITLE_BYTES,
    MAX_TYPE_BYTES,
    PLAIN_ID_RE,
    PRODUCER_RE,
    TYPE_RE,
    USER_ID_RE,
    check_bytes,
    check_data,
    check_epoch_ms,
    check_name,
    check_pattern,
    check_text,
    check_user_id,
)

Channel = Literal["push", "email", "sms", "inapp"]
Priority = Literal["critical", "high", "normal", "low"]
CHANNELS: tuple[str, ...] = ("push", "email", "sms", "inapp")
PRIORITIES: tuple[str, ...] = ("critical", "high", "normal", "low")
CRITICAL_PRIORITY = PRIORITIES[0]


def is_critical(priority: str) -> bool:
    """THE definition of critical, for requests and tasks alike: never held for quiet hours
    or bundled, retried through quiet hours, escalated, served from the rate-limit reserve.
    A request read from the critical lane is made critical when it is read
    (operators/partition.py), so its priority is all that later steps need to look at."""
    return priority == CRITICAL_PRIORITY
MAX_RECIPIENTS = 1000


class DedupParts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What happened: with the type and the recipient, names the event for dedup."""

    actor: str = ""
    object: str = ""


AudienceKind = Literal["followers", "topic", "all"]


class Audience(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who a fan-out reaches: followers of a user, subscribers of a topic, or everyone."""

    kind: AudienceKind
    id: str = ""  # the followed user id, or the topic name; empty for "all"
    # push/in-app now only to members active recently; the rest read a pull-on-read entry
    hybrid: bool = True

    def key(self) -> str:
        """The audience's name in state and Redis: "followers:u42", "topic:sports", "all"."""
        return self.kind if self.kind == "all" else f"{self.kind}:{self.id}"


class NotificationRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    type: str
    created_at: int
    recipients: list[str] = []
    v: int = 1
    priority: Priority = "normal"
    channels: list[Channel] | None = None
    collapse_key: str | None = None
    dedup: DedupParts | None = None
    title: str | None = None
    body: str | None = None
    template: str | None = None
    data: dict[str, Any] | None = None
    expires_at: int | None = None
    audience: Audience | None = None
    send_at: int | None = None  # epoch ms: hold until then
    # whose namespace ``id`` and ``dedup`` are in: the gateway sets its API key's
    # (schemas/identity.py); Kafka producers name themselves ("" = the shared one)
    producer: str = ""

    def event(self) -> Event:
        """The dedup parts as (actor, object), or None (the id names the event)."""
        d = self.dedup
        return None if d is None else (d.actor, d.object)

    def dedup_key(self, recipient: str) -> bytes:
        """producer + type + actor + object + recipient (without dedup parts, the request
        id stands in), as one digest (schemas/identity.py)."""
        return identity(self.producer, self.type, self.event(), self.id, recipient)


_decoder = msgspec.json.Decoder(NotificationRequest)
_encoder = msgspec.json.Encoder()


def decode_request(raw: bytes, max_bytes: int = 16 * 1024) -> NotificationRequest:
    """Decode and validate one request; raise ValidationFailed naming the field and problem."""
    if len(raw) > max_bytes:
        raise ValidationFailed(f"payload: {len(raw)} bytes is over the {max_bytes}-byte limit")
    req = decode_or_reason(_decoder, raw)
    check_request(req)
    return req


def check_request(req: NotificationRequest) -> None:
    """Rules the type system cannot say (schemas/limits.py has the shared limits)."""
    if req.v != 1:
        raise ValidationFailed(f"v: unsupported version {req.v} (this service reads 1)")
    if not PLAIN_ID_RE.fullmatch(req.id):  # the fast path first, here and below
        check_name("id", req.id, MAX_ID_BYTES)
    if req.producer and not PRODUCER_RE.fullmatch(req.producer):
        check_pattern("producer", req.producer, PRODUCER_RE, "a producer name")
    if len(req.type) > MAX_TYPE_BYTES or not TYPE_RE.fullmatch(req.type):
        check_bytes("type", req.type, MAX_TYPE_BYTES)
        check_pattern("type", req.type, TYPE_RE, "a dotted lower-case name like 'social.like'")
    if req.audience is not None:
        if req.recipients:
            raise ValidationFailed("recipients: give either recipients or audience, not both")
        a = req.audience
        if a.kind == "all" and a.id:
            raise ValidationFailed("audience.id: must be empty for kind 'all'")
        if a.kind == "followers":
            check_user_id("audience.id", a.id)
        elif a.kind == "topic":
            check_name("audience.id", a.id, MAX_AUDIENCE_ID_BYTES)
    elif not req.recipients:
        raise ValidationFailed("recipients: must name at least one user id (or give an audience)")
    if len(req.recipients) > MAX_RECIPIENTS:
        raise ValidationFailed(
            f"recipients: {len(req.recipients)} is over {MAX_RECIPIENTS}; name an audience instead"
        )
    for i, r in enumerate(req.recipients):
        if not USER_ID_RE.fullmatch(r):  # the common case without a call
            check_user_id(f"recipients[{i}]", r)
    if req.channels is not None and not req.channels:
        raise ValidationFailed("channels: must not be empty when given (omit it for all channels)")
    if req.title is None and req.body is None and req.template is None:
        raise ValidationFailed("body: one of title, body or template is required")
    if req.title is not None and len(req.title) * 4 > MAX_TITLE_BYTES:
        check_bytes("title", req.title, MAX_TITLE_BYTES)
    if req.body is not None and len(req.body) * 4 > MAX_BODY_BYTES:
        check_bytes("body", req.body, MAX_BODY_BYTES)
    if req.template is not None:
        check_name("template", req.template, MAX_TEMPLATE_BYTES)
    ck = req.collapse_key
    if ck is not None and (len(ck) * 4 > MAX_COLLAPSE_KEY_BYTES or CONTROL_RE.search(ck)):
        check_text("collapse_key", ck, MAX_COLLAPSE_KEY_BYTES)
    if req.dedup is not None:
        both = req.dedup.actor + req.dedup.object
        if len(both) * 4 > MAX_DEDUP_PART_BYTES or CONTROL_RE.search(both):
            check_text("dedup.actor", req.dedup.actor, MAX_DEDUP_PART_BYTES)
            check_text("dedup.object", req.dedup.object, MAX_DEDUP_PART_BYTES)
    if req.data is not None:
        check_data("data", req.data)
    if not 0 < req.created_at <= MAX_EPOCH_MS:
        check_epoch_ms("created_at", req.created_at)
    if req.expires_at is not None:
        check_epoch_ms("expires_at", req.expires_at)
    if req.send_at is not None:
        check_epoch_ms("send_at", req.send_at)
    if req.expires_at is not None and req.expires_at <= req.created_at:
        raise ValidationFailed("expires_at: must be after created_at")
    if req.send_at is not None and req.expires_at is not None and req.send_at >= req.expires_at:
        raise ValidationFailed("send_at: must be before expires_at")


def encode_request(req: NotificationRequest) -> bytes:
    return _encoder.encode(req)

