"""What goes to notify.rejected: the reason, where it came from, and the original bytes."""

from __future__ import annotations

import base64

import orjson


def rejection(reason: str, topic: str, partition: int, offset: int, payload: bytes | None,
              now_ms: int) -> bytes:
    """One rejected-topic message; the payload is kept as text when it is UTF-8, else base64."""
    text: str | None = None
    b64: str | None = None
    if payload is not None:
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            b64 = base64.b64encode(payload).decode()
    return orjson.dumps(
        {
            "reason": reason,
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "payload": text,
            "payload_b64": b64,
            "rejected_ms": now_ms,
        }
    )
