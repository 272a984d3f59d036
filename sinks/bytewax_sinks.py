"""The thin Bytewax surface of the sinks: a DynamicSink per destination.

Each partition (one per worker) builds its sender lazily in ``build()`` and handles a
whole ``write_batch`` at once: a batch of items is a batch of batches of tasks.
"""

from __future__ import annotations

import logging
import time

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from notiflow.config import Settings
from notiflow.topics import DEVICES, RECEIPTS, REJECTED, name, partition_for
from operators.partition import KIND_NAMES, Routed
from schemas.task import DeliveryTask
from sinks.channels import SENDERS, settle
from sinks.kafka_out import flush, produce, produce_receipts, producer

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _DeliveryPartition(StatelessSinkPartition[list[DeliveryTask]]):
    def __init__(self, channel: str, cfg: Settings) -> None:
        self._channel = channel
        self._cfg = cfg
        self._sender = SENDERS[channel](cfg)
        self._prod = producer(cfg.kafka_brokers)
        self._receipts = name(RECEIPTS, cfg.topic_prefix)
        self._devices = name(DEVICES, cfg.topic_prefix)

    def write_batch(self, items: list[list[DeliveryTask]]) -> None:
        tasks = [t for batch in items for t in batch]
        if not tasks:
            return
        t0 = time.perf_counter()
        results = self._sender.send(tasks)
        receipts, retire = settle(results, _now_ms())
        produce_receipts(self._prod, self._receipts, receipts, self._cfg.receipts_batch_rows)
        for key, value, user in retire:
            produce(self._prod, self._devices, key, value,
                    partition_for(user, self._cfg.partitions))
        flush(self._prod)
        log.debug("%s n=%d elapsed=%.4f", self._channel, len(tasks), time.perf_counter() - t0)

    def close(self) -> None:
        self._sender.close()
        flush(self._prod)


class DeliverySink(DynamicSink[list[DeliveryTask]]):
    """Sends one channel's tasks and publishes their receipts."""

    def __init__(self, channel: str, cfg: Settings) -> None:
        self._channel = channel
        self._cfg = cfg

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeliveryPartition:
        return _DeliveryPartition(self._channel, self._cfg)


class _RoutedPartition(StatelessSinkPartition[Routed]):
    def __init__(self, cfg: Settings, lane: str) -> None:
        self._cfg = cfg
        self._prod = producer(cfg.kafka_brokers)
        self._receipts = name(RECEIPTS, cfg.topic_prefix)
        self._rejected = name(REJECTED, cfg.topic_prefix)
        # re-routed requests go back to this lane's own topic
        self._kind_topics = [name(k, cfg.topic_prefix) for k in (lane, *KIND_NAMES[1:])]

    def write_batch(self, items: list[Routed]) -> None:
        wrote = False
        for r in items:
            if r.receipts:
                produce_receipts(self._prod, self._receipts, r.receipts,
                                 self._cfg.receipts_batch_rows)
                wrote = True
            for key, msg in r.rejected:
                produce(self._prod, self._rejected, key, msg)
                wrote = True
            for kind, part, key, value in r.reroute:
                produce(self._prod, self._kind_topics[kind], key, value, part)
                wrote = True
        if wrote:
            flush(self._prod)

    def close(self) -> None:
        flush(self._prod)


class RoutedSink(DynamicSink[Routed]):
    """What the router decided without sending: receipts, rejections, re-routed records."""

    def __init__(self, cfg: Settings, lane: str) -> None:
        self._cfg = cfg
        self._lane = lane

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RoutedPartition:
        return _RoutedPartition(self._cfg, self._lane)
