"""Small pure steps of the retry flow: decode (or reject, with a failed receipt when the
record still names a notification), key, pick one channel's due tasks."""

from __future__ import annotations

import logging
import time

import orjson

from notiflow.topics import RETRY, partition_for
from operators.rejects import rejected_key, rejection
from schemas.errors import ValidationFailed
from schemas.limits import (
    MAX_EPOCH_MS,
    MAX_ID_BYTES,
    TOKEN_ID_RE,
    TYPE_RE,
    bounded,
    check_name,
    check_user_id,
)
from schemas.receipt import Outcome, Receipt
from schemas.request import PRIORITIES
from schemas.retry import RetryEnvelope, read_envelope
from schemas.task import MAX_ATTEMPTS, PROVIDERS, DeliveryTask

log = logging.getLogger(__name__)
PARTITIONS_FOR_KEYS = 64  # spreads waiting retries over workers; not the Kafka count

# (key, message) for notify.rejected, and the failed receipt of the notification the
# record still names (None: it names none)
Rejected = tuple[bytes | None, bytes, Receipt | None]


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
    now_ms = int(time.time() * 1000)
    return (rejected_key(msg.key),
            rejection(reason, RETRY, msg.partition, msg.offset, msg.value, now_ms),
            failed_receipt(msg.value, reason, now_ms))


_TASK_INDEX = {f: i for i, f in enumerate(DeliveryTask.__struct_fields__)}


def failed_receipt(value: bytes | None, reason: str, now_ms: int) -> Receipt | None:
    """A ``failed`` receipt for a rejected envelope whose task still names a valid
    notification id and user (a task accepted once must not disappear without one); the
    other fields are kept only where they are valid, else left empty."""
    try:
        task = orjson.loads(value or b"null")["task"]  # a list: DeliveryTask is array_like
        nid, user = task[_TASK_INDEX["notification_id"]], task[_TASK_INDEX["user_id"]]
        check_name("task.notification_id", nid, MAX_ID_BYTES + 64)
        check_user_id("task.user_id", user)
    except (ValueError, LookupError, TypeError):  # ValidationFailed is a ValueError
        return None

    def get(name: str) -> object:
        i = _TASK_INDEX[name]
        return task[i] if len(task) > i else None

    def text(name: str, ok) -> str:
        v = get(name)
        return v if isinstance(v, str) and len(v) <= 256 and ok(v) else ""

    channel = text("channel", lambda v: v in PROVIDERS)
    created, attempt = get("created_ms"), get("attempt")
    return Receipt(
        notification_id=nid, user_id=user, type=text("type", TYPE_RE.fullmatch),
        priority=text("priority", lambda v: v in PRIORITIES), channel=channel,
        provider=text("provider", lambda v: v in PROVIDERS.get(channel, ())),
        target=text("target_id", TOKEN_ID_RE.fullmatch), outcome=Outcome.FAILED.value,
        reason=bounded(f"retry envelope rejected: {reason}"),
        created_ms=created if type(created) is int and 0 < created <= MAX_EPOCH_MS else now_ms,
        event_ms=now_ms,
        attempt=attempt if type(attempt) is int and 1 <= attempt <= MAX_ATTEMPTS else 1)


def rejected_record(x: Rejected) -> tuple[bytes | None, bytes]:
    return x[0], x[1]


def rejected_receipt(x: Rejected) -> Receipt | None:
    return x[2]


def is_envelope(x: RetryEnvelope | Rejected) -> bool:
    return isinstance(x, RetryEnvelope)


def partition_key(env: RetryEnvelope) -> str:
    return f"r{partition_for(env.task.user_id, PARTITIONS_FOR_KEYS):02d}"


def channel_batch(channel: str):
    def pick(kv: tuple[str, list[RetryEnvelope]]) -> list[DeliveryTask] | None:
        tasks = [e.task for e in kv[1] if e.task.channel == channel]
        return tasks or None

    return pick
