"""Retry envelope, version 1: a delivery task waiting on notify.retry, or dead on notify.dlq.

``due_ms`` is when to try again (exponential backoff with full jitter, never sooner than
the provider's Retry-After).  On notify.dlq ``dead_reason`` says why it stopped: the 24 h
retry deadline passed, or the notification expired.  ``make replay-dlq`` puts the task
back on notify.retry with a fresh deadline.
"""

from __future__ import annotations

import msgspec

from schemas.errors import ValidationFailed, decode_or_reason
from schemas.limits import MAX_EPOCH_MS, MAX_REASON_CHARS, check_bytes, check_size
from schemas.task import DeliveryTask, check_task

MAX_ENVELOPE_BYTES = 256 * 1024  # a task (a request's fields) plus its attempts' errors


class RetryEnvelope(msgspec.Struct, frozen=True):
    task: DeliveryTask
    due_ms: int
    deadline_ms: int
    dead_reason: str = ""
    v: int = 1


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RetryEnvelope)


def encode_envelope(e: RetryEnvelope) -> bytes:
    return _encoder.encode(e)


def decode_envelope(raw: bytes) -> RetryEnvelope:
    """Decode what this service wrote (snapshots, the DLQ); no checks."""
    return _decoder.decode(raw)


def read_envelope(raw: bytes | None) -> RetryEnvelope:
    """Decode and check an envelope read from notify.retry; ValidationFailed names the
    field and the problem."""
    if raw is None:
        raise ValidationFailed("payload: empty message (null value)")
    check_size(raw, MAX_ENVELOPE_BYTES)
    env = decode_or_reason(_decoder, raw)
    if env.v != 1:
        raise ValidationFailed(f"v: unsupported version {env.v} (this service reads 1)")
    for f in ("due_ms", "deadline_ms"):
        if not 0 <= getattr(env, f) <= MAX_EPOCH_MS:
            raise ValidationFailed(f"{f}: must be epoch milliseconds in 0..{MAX_EPOCH_MS}")
    check_bytes("dead_reason", env.dead_reason, 4 * MAX_REASON_CHARS)
    check_task(env.task)
    return env
