"""Retry envelope, version 1: a delivery task waiting on notify.retry, or dead on notify.dlq.

``due_ms`` is when to try again (exponential backoff with full jitter, never sooner than
the provider's Retry-After).  On notify.dlq ``dead_reason`` says why it stopped: the 24 h
retry deadline passed, or the notification expired.  ``make replay-dlq`` puts the task
back on notify.retry with a fresh deadline.
"""

from __future__ import annotations

import msgspec

from schemas.task import DeliveryTask


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
    return _decoder.decode(raw)
