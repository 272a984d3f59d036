"""A sink for flows whose only rejections are whole records (the retry flow): each item is
one ``(key, message)`` for notify.rejected, built by operators/rejects.py."""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from notiflow.config import Settings
from notiflow.topics import REJECTED, name
from sinks.kafka_out import flush, produce, producer


class _RejectedPartition(StatelessSinkPartition[tuple[bytes | None, bytes]]):
    def __init__(self, cfg: Settings) -> None:
        self._prod = producer(cfg.kafka_brokers)
        self._topic = name(REJECTED, cfg.topic_prefix)

    def write_batch(self, items: list[tuple[bytes | None, bytes]]) -> None:
        for key, msg in items:
            produce(self._prod, self._topic, key, msg)
        if items:
            flush(self._prod)

    def close(self) -> None:
        flush(self._prod)


class RejectedSink(DynamicSink[tuple[bytes | None, bytes]]):
    def __init__(self, cfg: Settings) -> None:
        self._cfg = cfg

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RejectedPartition:
        return _RejectedPartition(self._cfg)
