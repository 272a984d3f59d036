"""Producing from sinks: receipts, rejected requests, re-routed records, device changes.

One confluent-kafka producer per process (it is thread-safe and batches internally).
Sinks ``flush()`` at the end of each ``write_batch`` that produced something, so what a
snapshot says was consumed has reached the broker (at-least-once).
"""

from __future__ import annotations

import threading

from confluent_kafka import Producer

from schemas.receipt import Receipt, encode_rows

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
        _produce(prod, topic, None, blob)
        i += n


def _produce(prod: Producer, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None) -> None:
    while True:
        try:
            if partition is None:
                prod.produce(topic, value, key)
            else:
                prod.produce(topic, value, key, partition=partition)
            return
        except BufferError:  # local queue full: let deliveries drain, then retry
            prod.poll(0.05)


def produce(prod: Producer, topic: str, key: bytes | None, value: bytes | None,
            partition: int | None = None) -> None:
    _produce(prod, topic, key, value, partition)


def flush(prod: Producer, timeout_s: float = 30.0) -> None:
    left = prod.flush(timeout_s)
    if left:
        raise RuntimeError(f"{left} messages not delivered to Kafka within {timeout_s}s")
