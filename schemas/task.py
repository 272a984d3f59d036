"""Delivery task, version 1: one send to one target on one channel, after routing.

The router (operators/) makes these from a request joined with the user's settings and
devices; sinks/ send them; the retry topic (notify.retry) carries them unchanged.
``array_like`` keeps them compact on the wire and in Bytewax exchange/snapshots.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

import msgspec

from schemas.errors import ValidationFailed
from schemas.identity import SEND_KEY_RE
from schemas.limits import (
    DEVICE_TOKEN_RE,
    MAX_BODY_BYTES,
    MAX_COLLAPSE_KEY_BYTES,
    MAX_EMAIL_BYTES,
    MAX_ID_BYTES,
    MAX_LOCALE_BYTES,
    MAX_REASON_CHARS,
    MAX_TEMPLATE_BYTES,
    MAX_TITLE_BYTES,
    MAX_TYPE_BYTES,
    PRODUCER_RE,
    TOKEN_ID_RE,
    TYPE_RE,
    check_bytes,
    check_data,
    check_epoch_ms,
    check_name,
    check_pattern,
    check_text,
    check_user_id,
    shown,
)

# the providers that serve each channel (sinks/ has a module for each)
PROVIDERS: dict[str, tuple[str, ...]] = {
    "push": ("apns", "fcm"), "email": ("sendgrid", "ses", "mailgun"),
    "sms": ("twilio", "vonage"), "inapp": ("redis",)}
MAX_ATTEMPTS = 10_000  # far over what 24 h of capped backoff makes


class DeliveryTask(msgspec.Struct, frozen=True, array_like=True):
    notification_id: str
    user_id: str
    type: str
    priority: str  # critical | high | normal | low
    channel: str  # push | email | sms | inapp
    provider: str  # apns | fcm | sendgrid | twilio | redis
    target_id: str  # device token id for push; "email" / "phone" / "inbox" otherwise
    address: str  # device token, email address or phone number ("" for in-app)
    title: str | None
    body: str | None
    template: str | None
    data: dict[str, Any] | None
    collapse_key: str | None
    created_ms: int
    expires_ms: int = 0  # 0: never expires
    attempt: int = 1
    locale: str = "en"
    v: int = 1
    # one line per failed attempt ("attempt 2 at 1764050000000 apns: apns 503 ..."),
    # carried through notify.retry so the DLQ shows every attempt's error
    errors: tuple[str, ...] = ()
    deadline_ms: int = 0  # set at the first retryable failure: retry until then (24 h)
    # the user's quiet hours (start "HH:MM", end "HH:MM", IANA tz) when routed, for
    # non-critical tasks: a retry that falls due inside them waits for their end
    quiet: tuple[str, str, str] | None = None
    # the request's producer namespace, and this send's identity (schemas/identity.py
    # send_key, made by the router): the sent-marker's name.  "" (tasks from before it):
    # the marker is made from the fields above, in the shared namespace
    producer: str = ""
    key: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeliveryTask)


def encode_task(t: DeliveryTask) -> bytes:
    return _encoder.encode(t)


def decode_task(raw: bytes) -> DeliveryTask:
    return _decoder.decode(raw)


def collapse_identity(t: DeliveryTask) -> str:
    """What a device keys its shown notification by (APNs apns-collapse-id, Android's
    notification tag): a new one with the same identity replaces the old, so a re-send after
    a crash replaces itself instead of showing twice.  The request's own collapse_key when
    set (the product's "replace the previous one"; a bundle keeps it), else a digest of
    (user, notification id): 34 ASCII bytes, under APNs' 64, never a CR/LF."""
    if t.collapse_key:
        return t.collapse_key
    key = f"{t.user_id}\x00{t.notification_id}".encode()
    return "n:" + blake2b(key, digest_size=16).hexdigest()


def check_task(t: DeliveryTask) -> None:
    """What the router guarantees of a task, checked again for tasks read back from
    notify.retry (anyone with access to the topic can write one)."""
    from schemas.settings import check_quiet_hours

    if t.v != 1:
        raise ValidationFailed(f"task.v: unsupported version {t.v} (this service reads 1)")
    check_name("task.notification_id", t.notification_id, MAX_ID_BYTES + 64)
    check_user_id("task.user_id", t.user_id)
    check_bytes("task.type", t.type, MAX_TYPE_BYTES)
    check_pattern("task.type", t.type, TYPE_RE, "a notification type")
    if t.priority not in ("critical", "high", "normal", "low"):
        raise ValidationFailed(f"task.priority: {shown(t.priority)} is not a priority")
    if t.provider not in PROVIDERS.get(t.channel, ()):
        raise ValidationFailed(f"task.provider: {shown(t.provider)} does not serve channel "
                               f"{shown(t.channel)}")
    check_pattern("task.target_id", t.target_id, TOKEN_ID_RE, "a target id")
    if t.channel == "push":
        check_pattern("task.address", t.address, DEVICE_TOKEN_RE, "a device token")
    else:
        check_bytes("task.address", t.address, MAX_EMAIL_BYTES)
        check_name("task.address", t.address or "-", MAX_EMAIL_BYTES)
    check_bytes("task.title", t.title, MAX_TITLE_BYTES)
    check_bytes("task.body", t.body, MAX_BODY_BYTES)
    check_bytes("task.template", t.template, MAX_TEMPLATE_BYTES)
    check_text("task.collapse_key", t.collapse_key, MAX_COLLAPSE_KEY_BYTES)
    check_bytes("task.locale", t.locale, MAX_LOCALE_BYTES)
    if t.data is not None:
        check_data("task.data", t.data)
    check_epoch_ms("task.created_ms", t.created_ms)
    check_epoch_ms("task.expires_ms", t.expires_ms or None)
    check_epoch_ms("task.deadline_ms", t.deadline_ms or None)
    if not 1 <= t.attempt <= MAX_ATTEMPTS:
        raise ValidationFailed(f"task.attempt: must be 1..{MAX_ATTEMPTS}")
    if len(t.errors) > MAX_ATTEMPTS:
        raise ValidationFailed(f"task.errors: over {MAX_ATTEMPTS} lines")
    for i, e in enumerate(t.errors):
        check_bytes(f"task.errors[{i}]", e, 4 * MAX_REASON_CHARS)
    if t.quiet is not None:
        check_quiet_hours("task.quiet", *t.quiet)
    if t.producer:
        check_pattern("task.producer", t.producer, PRODUCER_RE, "a producer name")
    if t.key:
        check_pattern("task.key", t.key, SEND_KEY_RE, "a send identity (32 hex digits)")
