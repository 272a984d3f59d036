"""Producing from sinks: receipts, rejected requests, re-routed records, device changes.

One confluent-kafka producer per process (it is thread-safe and batches internally).
Sinks ``flush()`` at the end of each ``write_batch`` that produced something, so what a
snapshot says was consumed has reached the broker (at-least-once).
"""

from __future__ import annotations

import hashlib
import logging
import threading

import msgspec
from confluent_kafka import KafkaError, KafkaException, Producer

from notiflow.metrics import OVERSIZED_DROPPED
from schemas.limits import MAX_REASON_CHARS
from schemas.receipt import Receipt, encode_rows

log = logging.getLogger(__name__)

_lock = threading.Lock()
_producers: dict[str, Producer] = {}


def producer(brokers: str) -> Producer:
    with _lock:
        p = _producers.get(brokers)
        if p is None:
            p = Producer({
                "bootstrap.servers": brokers,
                "linger.ms": 2,
                "batch.num.messages": 10000,
                "queue.buffering.max.messages": 1_000_000,
                "compression.type": "lz4",
                "acks": "all",
                # librdkafka's own retries after a lost ack would otherwise write a
                # receipt or retry envelope twice, or reorder a partition
                "enable.idempotence": True,
            })
            _producers[brokers] = p
        return p


MAX_MESSAGE_BYTES = 512 * 1024  # well under Kafka's default 1 MiB message limit


def produce_receipts(prod: Producer, topic: str, rows: list[Receipt], chunk: int = 2000) -> None:
    """Receipts as JSONEachRow, at most ``chunk`` rows and ~512 KiB per message
    (the loader inserts them as they are)."""
    i = 0
    while i < len(rows):
        n = min(chunk, len(rows) - i)
        blob = encode_rows(rows[i : i + n])
        while len(blob) > MAX_MESSAGE_BYTES and n > 1:
            n //= 2
            blob = encode_rows(rows[i : i + n])
        if len(blob) > MAX_MESSAGE_BYTES:  # one row alone: its reason is what can be long
            r = rows[i]
            blob = encode_rows([msgspec.structs.replace(
                r, reason=r.reason[:MAX_REASON_CHARS] + " (cut)", target=r.target[:200])])
        _produce(prod, topic, None, blob)
        i += n


def _produce(prod: Producer, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None) -> bool:
    """Produce one record; False when it is over the producer's message size.  Such a
    record is logged (size, sha256) and counted, never raised: one record must not stop
    the sink (every producer of this service bounds what it writes, so this is a bug's
    or an attacker's record, and raising would replay it forever)."""
    while True:
        try:
            if partition is None:
                prod.produce(topic, value, key)
            else:
                prod.produce(topic, value, key, partition=partition)
            return True
        except BufferError:  # local queue full: let deliveries drain, then retry
            prod.poll(0.05)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                raise
            size = len(value or b"") + len(key or b"")
            log.error("record over the message size not produced: topic=%s bytes=%d "
                      "sha256=%s key=%r", topic, size,
                      hashlib.sha256(value or b"").hexdigest(), (key or b"")[:100])
            OVERSIZED_DROPPED.labels(topic).inc()
            return False


def produce(prod: Producer, topic: str, key: bytes | None, value: bytes | None,
            partition: int | None = None) -> bool:
    return _produce(prod, topic, key, value, partition)


def flush(prod: Producer, timeout_s: float = 30.0) -> None:
    left = prod.flush(timeout_s)
    if left:
        raise RuntimeError(f"{left} messages not delivered to Kafka within {timeout_s}s")
