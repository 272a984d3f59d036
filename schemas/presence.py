"""Presence, version 1: the value of notify.presence ("this user's app was just open").

Published by the gateway when a user reads the inbox or registers a device (at most once a
minute per user), keyed and partitioned by ``user_id``.  The flow keeps the last time per
user and pushes fan-outs now only to users seen inside ``NOTIFLOW_PRESENCE_WINDOW_S``; the
rest read the pull-on-read entry when they next open the app.

Example::

    {"v": 1, "user_id": "u1", "seen_ms": 1764050000000}
"""

from __future__ import annotations

import msgspec

from schemas.errors import ValidationFailed, decode_or_reason


class Presence(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: str
    seen_ms: int
    v: int = 1


_decoder = msgspec.json.Decoder(Presence)
_encoder = msgspec.json.Encoder()


def decode_presence(raw: bytes) -> Presence:
    p = decode_or_reason(_decoder, raw)
    if p.v != 1:
        raise ValidationFailed(f"v: unsupported version {p.v} (this service reads 1)")
    if not p.user_id:
        raise ValidationFailed("user_id: must not be empty")
    if p.seen_ms <= 0:
        raise ValidationFailed("seen_ms: must be epoch milliseconds > 0")
    return p


def encode_presence(p: Presence) -> bytes:
    return _encoder.encode(p)
