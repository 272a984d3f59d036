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
from schemas.limits import check_epoch_ms, check_size, check_user_id


class Presence(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: str
    seen_ms: int
    v: int = 1


_decoder = msgspec.json.Decoder(Presence)
_encoder = msgspec.json.Encoder()


def decode_presence(raw: bytes) -> Presence:
    check_size(raw)
    p = decode_or_reason(_decoder, raw)
    if p.v != 1:
        raise ValidationFailed(f"v: unsupported version {p.v} (this service reads 1)")
    check_user_id("user_id", p.user_id)
    check_epoch_ms("seen_ms", p.seen_ms)
    return p


def encode_presence(p: Presence) -> bytes:
    return _encoder.encode(p)
