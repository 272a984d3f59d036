"""Device, version 1: the value of compacted notify.devices.

Kafka key ``"{user_id}:{token_id}"`` (so compaction keeps every device of a user), and
partition ``notiflow.topics.partition_for(user_id)`` (so the device sits beside the user's
settings and requests).  ``active: false`` retires a token; a null value deletes it.

Example::

    {"v": 1, "user_id": "u1", "token_id": "ipad", "platform": "apns",
     "token": "a1b2...", "active": true}
"""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.errors import ValidationFailed, decode_or_reason
from schemas.limits import (
    DEVICE_TOKEN_RE,
    TOKEN_ID_RE,
    check_pattern,
    check_size,
    check_user_id,
    split_user_key,
)

Platform = Literal["apns", "fcm"]


class Device(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: str
    token_id: str
    platform: Platform
    token: str
    v: int = 1
    active: bool = True


_decoder = msgspec.json.Decoder(Device)
_encoder = msgspec.json.Encoder()


def decode_device(raw: bytes) -> Device:
    check_size(raw)
    d = decode_or_reason(_decoder, raw)
    if d.v != 1:
        raise ValidationFailed(f"v: unsupported version {d.v} (this service reads 1)")
    for f in ("user_id", "token_id", "token"):
        if not getattr(d, f):
            raise ValidationFailed(f"{f}: must not be empty")
    check_user_id("user_id", d.user_id)
    check_pattern("token_id", d.token_id, TOKEN_ID_RE, "a device name")
    check_pattern("token", d.token, DEVICE_TOKEN_RE, "a device token")
    return d


def parse_device_key(key: bytes) -> tuple[str, str]:
    """(user id, token id) of a notify.devices key ``user:token_id`` (a tombstone has
    nothing else); ValidationFailed when it is not one."""
    user, token_id = split_user_key(key, ":", "user_id:token_id")
    check_pattern("key: token_id", token_id, TOKEN_ID_RE, "a device name")
    return user, token_id


def device_key(d: Device) -> bytes:
    return f"{d.user_id}:{d.token_id}".encode()


def encode_device(d: Device) -> bytes:
    return _encoder.encode(d)
