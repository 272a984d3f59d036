"""Small pure steps of the retry flow: decode (or reject), key, pick one channel's due tasks."""

from __future__ import annotations

import logging
import time

from notiflow.topics import RETRY, partition_for
from operators.rejects import rejected_key, rejection
from schemas.errors import ValidationFailed
from schemas.limits import bounded
from schemas.retry import RetryEnvelope, read_envelope
from schemas.task import DeliveryTask

log = logging.getLogger(__name__)
PARTITIONS_FOR_KEYS = 64  # spreads waiting retries over workers; not the Kafka count

# (key, message) for notify.rejected
Rejected = tuple[bytes | None, bytes]


def envelope_or_rejected(msg) -> RetryEnvelope | Rejected:
    """A Kafka message's envelope, or what to put on notify.rejected instead: anyone who
    can write to notify.retry can write anything there, and none of it may stop the flow
    or vanish without a trace."""
    try:
        return read_envelope(msg.value)
    except ValidationFailed as e:
        reason = e.reason
    except Exception as e:  # a decoder surprise: this record alone, with the reason
        log.exception("retry record at offset %s raised", getattr(msg, "offset", "?"))
        reason = bounded(f"internal error: {type(e).__name__}: {e}")
    return rejected_key(msg.key), rejection(reason, RETRY, msg.partition, msg.offset,
                                            msg.value, int(time.time() * 1000))


def is_envelope(x: RetryEnvelope | Rejected) -> bool:
    return isinstance(x, RetryEnvelope)


def partition_key(env: RetryEnvelope) -> str:
    return f"r{partition_for(env.task.user_id, PARTITIONS_FOR_KEYS):02d}"


def channel_batch(channel: str):
    def pick(kv: tuple[str, list[RetryEnvelope]]) -> list[DeliveryTask] | None:
        tasks = [e.task for e in kv[1] if e.task.channel == channel]
        return tasks or None

    return pick
