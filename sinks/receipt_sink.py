"""A sink of single receipts, for flows that make a few outside the delivery sinks (the
retry flow's failed receipts for envelopes it rejects)."""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from notiflow.config import Settings
from notiflow.topics import RECEIPTS, name
from schemas.receipt import Receipt
from sinks.kafka_out import flush, produce_receipts, producer


class _ReceiptPartition(StatelessSinkPartition[Receipt]):
    def __init__(self, cfg: Settings) -> None:
        self._prod = producer(cfg.kafka_brokers)
        self._topic = name(RECEIPTS, cfg.topic_prefix)
        self._rows = cfg.receipts_batch_rows

    def write_batch(self, items: list[Receipt]) -> None:
        if items:
            produce_receipts(self._prod, self._topic, items, self._rows)
            flush(self._prod)

    def close(self) -> None:
        flush(self._prod)


class ReceiptSink(DynamicSink[Receipt]):
    def __init__(self, cfg: Settings) -> None:
        self._cfg = cfg

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ReceiptPartition:
        return _ReceiptPartition(self._cfg)
