"""The thin Bytewax surface of the sinks: a DynamicSink per destination.

Each partition (one per worker) builds its sender lazily in ``build()`` and handles a
whole ``write_batch`` at once: a batch of items is a batch of batches of tasks.
"""

from __future__ import annotations

import logging
import random
import time

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from notiflow.config import Settings
from notiflow.crash_loop_store import ROUTED, ProbeAcks
from notiflow.metrics import DEAD_LETTERS, DELIVERIES, MARKERS_UNAVAILABLE, RETRIES
from notiflow.topics import CRITICAL, DEVICES, DLQ, RECEIPTS, REJECTED, RETRY, name, partition_for
from operators.backoff import BackoffPolicy
from operators.partition import KIND_NAMES, Routed
from schemas.request import CHANNELS
from schemas.retry import encode_envelope
from schemas.task import DeliveryTask
from sinks.channels import SENDERS, settle
from sinks.kafka_out import flush, produce, produce_receipts, producer
from sinks.markers import SentMarkers, marker_key
from sinks.pull_feed import FanoutRedis
from sinks.results import SendResult, isolated

log = logging.getLogger(__name__)


def unique_sends(tasks: list[DeliveryTask]) -> tuple[list[DeliveryTask], list[DeliveryTask]]:
    """(one copy of each (notification, user, channel, target), the other copies).

    The copy kept is the latest attempt: its retry chain is the one that goes on (the
    retry queue drops attempts older than what it has seen), so the others end here."""
    keep: dict[str, DeliveryTask] = {}
    again: list[DeliveryTask] = []
    for t in tasks:
        k = marker_key(t)
        had = keep.get(k)
        if had is None:
            keep[k] = t
        elif t.attempt > had.attempt:
            keep[k] = t
            again.append(had)
        else:
            again.append(t)
    return list(keep.values()), again


def count(s) -> None:
    """Metrics of one settled batch."""
    by: dict[tuple[str, str, str], int] = {}
    for r in s.receipts:
        k = (r.channel, r.provider, r.outcome)
        by[k] = by.get(k, 0) + 1
    for k, n in by.items():
        DELIVERIES.labels(*k).inc(n)
    for env in s.retry:
        RETRIES.labels(env.task.channel, env.task.provider).inc()
    for env in s.dead:
        DEAD_LETTERS.labels(env.task.channel).inc()


def _now_ms() -> int:
    return int(time.time() * 1000)


class _DeliveryPartition(StatelessSinkPartition[list[DeliveryTask]]):
    def __init__(self, channel: str, cfg: Settings) -> None:
        self._channel = channel
        self._cfg = cfg
        self._sender = SENDERS[channel](cfg)
        # in-app writes its own marker inside its Redis script
        self._markers = (None if channel == "inapp"
                         else SentMarkers(cfg.redis_url, cfg.sent_marker_ttl_s))
        self._prod = producer(cfg.kafka_brokers)
        t = cfg.topic_prefix
        self._receipts, self._devices = name(RECEIPTS, t), name(DEVICES, t)
        self._retry, self._dlq = name(RETRY, t), name(DLQ, t)
        self._critical = name(CRITICAL, t)
        self._policy = BackoffPolicy(base_s=cfg.retry_base_s, cap_s=cfg.retry_cap_s,
                                     deadline_s=cfg.retry_deadline_s)
        self._rng = random.Random()
        self._acks = ProbeAcks(cfg.redis_url)

    def write_batch(self, items: list[list[DeliveryTask]]) -> None:
        self._send(items)
        for batch in items:  # a careful run's record: written, so the next may leave
            probe = getattr(batch, "probe", None)
            if probe is not None:
                self._acks.ack(probe, self._channel)

    def _send(self, items: list[list[DeliveryTask]]) -> None:
        tasks = [t for batch in items for t in batch]
        if not tasks:
            return
        t0 = time.perf_counter()
        # a replay can put two copies of one send (one retry chain from before a crash, one
        # from after) into the same batch, where the markers cannot tell them apart yet
        tasks, done = unique_sends(tasks)
        if self._markers is not None:
            seen = self._markers.unavailable
            tasks, marked = self._markers.unsent(tasks)
            done += marked
            if self._markers.unavailable != seen:
                MARKERS_UNAVAILABLE.inc()
        # a raise nobody foresaw fails the task that raises, not the batch (or the lane)
        results = isolated(self._sender.send, tasks, self._channel) if tasks else []
        results += [SendResult(t, "duplicate", "already sent (sent-marker)") for t in done]
        if self._markers is not None:
            self._markers.mark([r.task for r in results if r.status == "sent"])
        now = _now_ms()
        s = settle(results, now, self._policy, self._rng, self._cfg.escalation)
        produce_receipts(self._prod, self._receipts, s.receipts, self._cfg.receipts_batch_rows)
        count(s)
        parts = self._cfg.partitions
        for key, value, user in s.retire:
            produce(self._prod, self._devices, key, value, partition_for(user, parts))
        for env in s.retry:
            produce(self._prod, self._retry, env.task.user_id.encode(), encode_envelope(env),
                    partition_for(env.task.user_id, parts))
        for env in s.dead:
            produce(self._prod, self._dlq, env.task.user_id.encode(), encode_envelope(env))
            log.warning("dead-lettered", extra={
                "notification_id": env.task.notification_id, "user_id": env.task.user_id,
                "channel": env.task.channel, "provider": env.task.provider,
                "attempts": env.task.attempt - 1, "reason": env.dead_reason})
        for r in s.receipts:
            if r.outcome == "failed":  # permanent: no retry will come; searchable by id
                log.info("failed", extra={"notification_id": r.notification_id,
                                          "user_id": r.user_id, "channel": r.channel,
                                          "provider": r.provider, "reason": r.reason})
        for user, req in s.escalate:
            produce(self._prod, self._critical, user.encode(), req, partition_for(user, parts))
        flush(self._prod)
        log.debug("%s n=%d retry=%d dead=%d elapsed=%.4f", self._channel, len(results),
                  len(s.retry), len(s.dead), time.perf_counter() - t0)

    def close(self) -> None:
        self._acks.close()
        self._sender.close()
        if self._markers is not None:
            self._markers.close()
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
