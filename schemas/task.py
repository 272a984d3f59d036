"""Delivery task, version 1: one send to one target on one channel, after routing.

The router (operators/) makes these from a request joined with the user's settings and
devices; sinks/ send them; the retry topic (notify.retry) carries them unchanged.
``array_like`` keeps them compact on the wire and in Bytewax exchange/snapshots.
"""

from __future__ import annotations

from typing import Any

import msgspec


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


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeliveryTask)


def encode_task(t: DeliveryTask) -> bytes:
    return _encoder.encode(t)


def decode_task(raw: bytes) -> DeliveryTask:
    return _decoder.decode(raw)
