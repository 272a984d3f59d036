"""Subscription, version 1: the value of compacted notify.subscriptions (from upstream).

One record says "user ``user_id`` follows ``target``", where target is an audience key:
``followers:{user}`` (follows that user) or ``topic:{name}`` (subscribes to a topic).
Kafka key ``"{user_id}|{target}"`` (compaction keeps each pair once), partition
``notiflow.topics.partition_for(user_id)``: the SUBSCRIBER's partition, beside their
settings and devices, so each partition can expand its own members of an audience.  A
null value (tombstone) under that key is an unsubscribe.

Example::

    {"v": 1, "user_id": "u1", "target": "followers:u42"}
"""

from __future__ import annotations

import msgspec

from schemas.errors import ValidationFailed, decode_or_reason
from schemas.limits import (
    MAX_AUDIENCE_ID_BYTES,
    check_name,
    check_size,
    check_user_id,
    shown,
    split_user_key,
)

TARGET_KINDS = ("followers", "topic")


class Subscription(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: str
    target: str
    v: int = 1


_decoder = msgspec.json.Decoder(Subscription)
_encoder = msgspec.json.Encoder()


def check_target(target: str) -> str:
    """Raise ValidationFailed unless ``target`` is "followers:{id}" or "topic:{id}"."""
    kind, sep, ident = target.partition(":")
    if not sep or kind not in TARGET_KINDS or not ident:
        raise ValidationFailed(
            f"target: {shown(target)} is not 'followers:<user id>' or 'topic:<name>'")
    if kind == "followers":  # the same rules as a request's audience
        check_user_id("target", ident)
    else:
        check_name("target", ident, MAX_AUDIENCE_ID_BYTES)
    return target


def decode_subscription(raw: bytes) -> Subscription:
    check_size(raw)
    s = decode_or_reason(_decoder, raw)
    if s.v != 1:
        raise ValidationFailed(f"v: unsupported version {s.v} (this service reads 1)")
    check_user_id("user_id", s.user_id)  # never '|': it separates the Kafka key
    check_target(s.target)
    return s


def subscription_key(user_id: str, target: str) -> bytes:
    return f"{user_id}|{target}".encode()


def parse_subscription_key(key: bytes) -> tuple[str, str]:
    """(user id, target) of a key (a tombstone's only content); ValidationFailed when it is
    not one."""
    user, target = split_user_key(key, "|", "user_id|target")
    return user, check_target(target)


def encode_subscription(s: Subscription) -> bytes:
    return _encoder.encode(s)
