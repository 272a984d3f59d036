"""Small pure steps of the retry flow: decode, key, pick one channel's due tasks."""

from __future__ import annotations

import logging

import msgspec

from notiflow.topics import partition_for
from schemas.retry import RetryEnvelope, decode_envelope
from schemas.task import DeliveryTask

log = logging.getLogger(__name__)
PARTITIONS_FOR_KEYS = 64  # spreads waiting retries over workers; not the Kafka count


def envelope_or_none(msg) -> RetryEnvelope | None:
    """A Kafka message's envelope; a broken one is logged and dropped (we wrote it)."""
    try:
        return decode_envelope(msg.value)
    except (msgspec.DecodeError, TypeError) as e:
        log.error("undecodable retry envelope at offset %s: %s", getattr(msg, "offset", "?"), e)
        return None


def partition_key(env: RetryEnvelope) -> str:
    return f"r{partition_for(env.task.user_id, PARTITIONS_FOR_KEYS):02d}"


def channel_batch(channel: str):
    def pick(kv: tuple[str, list[RetryEnvelope]]) -> list[DeliveryTask] | None:
        tasks = [e.task for e in kv[1] if e.task.channel == channel]
        return tasks or None

    return pick
