"""The thin Bytewax surface of the sinks: a DynamicSink per destination.

Each partition (one per worker) builds its clients lazily in ``build()`` and handles a
whole ``write_batch`` at once: a batch of items is a batch of batches of tasks.
"""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from notiflow.config import Settings
from notiflow.crash_loop_store import ROUTED, ProbeAcks
from notiflow.topics import RECEIPTS, REJECTED, name
from operators.partition import KIND_NAMES, Routed
from schemas.request import CHANNELS
from schemas.task import DeliveryTask
from sinks.delivery import ChannelDelivery
from sinks.kafka_out import flush, produce, produce_receipts, producer
from sinks.pull_feed import FanoutRedis


class _DeliveryPartition(StatelessSinkPartition[list[DeliveryTask]]):
    """Sends in the worker's own thread (the retry flow, tests, benchmarks); the lanes use
    the deliver step instead (dataflows/adapters.py: ``DeliverLogic``)."""

    def __init__(self, channel: str, cfg: Settings) -> None:
        self._channel = channel
        self._delivery = ChannelDelivery(channel, cfg)
        self._acks = ProbeAcks(cfg.redis_url)

    def write_batch(self, items: list[list[DeliveryTask]]) -> None:
        self._delivery.deliver([t for batch in items for t in batch])
        for batch in items:  # a careful run's record: written, so the next may leave
            probe = getattr(batch, "probe", None)
            if probe is not None:
                self._acks.ack(probe, self._channel)

    def close(self) -> None:
        self._acks.close()
        self._delivery.close()


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
        # fan-out jobs, progress, pull-on-read entries, follows mirror (connects lazily)
        self._fanout = FanoutRedis(cfg.redis_url, pull_max=cfg.pull_max,
                                   pull_ttl_s=cfg.pull_ttl_s,
                                   status_ttl_s=cfg.fanout_status_ttl_s,
                                   wait_s=cfg.fanout_redis_wait_s)
        self._acks = ProbeAcks(cfg.redis_url)

    def write_batch(self, items: list[Routed]) -> None:
        self._write(items)
        for r in items:  # a careful run's record: say which sinks get work from it
            if r.probe is not None:
                self._acks.ack(r.probe, ROUTED, [ROUTED] + [ch for ch in CHANNELS
                                                            if getattr(r, ch)])

    def _write(self, items: list[Routed]) -> None:
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
        # after the scatter copies are in Kafka: a job's record never names lost copies
        self._fanout.write([x for r in items for x in r.pull],
                           [x for r in items for x in r.fanout_jobs],
                           [x for r in items for x in r.progress],
                           [x for r in items for x in r.follows],
                           [x for r in items for x in r.settings_copy])

    def close(self) -> None:
        self._acks.close()
        flush(self._prod)
        self._fanout.close()


class RoutedSink(DynamicSink[Routed]):
    """What the router decided without sending: receipts, rejections, re-routed records."""

    def __init__(self, cfg: Settings, lane: str) -> None:
        self._cfg = cfg
        self._lane = lane

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RoutedPartition:
        return _RoutedPartition(self._cfg, self._lane)
