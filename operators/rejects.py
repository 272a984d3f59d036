"""What goes to notify.rejected: the reason, where it came from, and a bounded excerpt.

A rejected record never carries the whole payload: the payload is whatever a producer sent
(up to the broker's message size), and JSON-escaping can double it (600 KB of double
quotes become 1.2 MB), which would make the rejected record itself too large to produce
and stop the lane.  It carries the first ``EXCERPT_BYTES`` (as text when the payload is
UTF-8, else base64), the payload's size and its sha256, so the original can still be
found and compared.
"""

from __future__ import annotations

import base64
import hashlib

import orjson

from schemas.limits import bounded

EXCERPT_BYTES = 1024
MAX_KEY_BYTES = 1024  # the Kafka key of a rejected record (the original key, cut)


def rejection(reason: str, topic: str, partition: int, offset: int, payload: bytes | None,
              now_ms: int) -> bytes:
    """One rejected-topic message, at most a few KiB whatever the payload was."""
    text: str | None = None
    b64: str | None = None
    if payload is not None:
        head = payload[:EXCERPT_BYTES]
        try:
            payload.decode()
            # a cut inside a multi-byte character loses only that character
            text = head.decode(errors="ignore")
        except UnicodeDecodeError:
            b64 = base64.b64encode(head).decode()
    return orjson.dumps(
        {
            "reason": bounded(reason),
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "payload": text,
            "payload_b64": b64,
            "payload_bytes": None if payload is None else len(payload),
            "payload_sha256": None if payload is None else hashlib.sha256(payload).hexdigest(),
            "payload_truncated": payload is not None and len(payload) > EXCERPT_BYTES,
            "rejected_ms": now_ms,
        }
    )


def rejected_key(key: bytes | None) -> bytes | None:
    """The original key, cut to ``MAX_KEY_BYTES`` (keys are as unbounded as values)."""
    return key if key is None or len(key) <= MAX_KEY_BYTES else key[:MAX_KEY_BYTES]
