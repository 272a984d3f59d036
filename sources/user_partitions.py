"""Kafka input that reads a user partition's control topics before its requests.

The stock ``bytewax.connectors.kafka.KafkaSource`` treats every topic-partition on its
own, so nothing stops requests[p] from being decided before settings[p] was read
(a request decided on default settings: the cold-start bug DESIGN.md forbids).  This
source is built the same way (``assign()``, no consumer groups, offsets kept in Bytewax
recovery snapshots) but one source partition p owns requests[p] and the *control* topics'
partition p: settings and devices, and on the bulk lane subscriptions and presence (the
audience index of a fan-out).  It pauses requests[p] until every control partition reaches
the high watermark it had at start, then interleaves them all in arrival order, so
per-user order holds all the way to the join.

Each poll becomes ONE item ``("p<p>", (p, [records]))``: the flow works on batches.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from notiflow.metrics import QUEUE_LAG
from operators.partition import DEVICES, PRESENCE, REQUEST, SETTINGS, SUBSCRIPTIONS, Record

log = logging.getLogger(__name__)

Offsets = dict[int, int]  # kind -> next offset to read
Item = tuple[str, tuple[int, list[Record]]]


def partition_key(p: int) -> str:
    return f"p{p:04d}"


class _UserPartition(StatefulSourcePartition[Item, Offsets]):
    def __init__(self, brokers: str, topics: dict[int, str], p: int, resume: Offsets | None,
                 batch: int, poll_s: float) -> None:
        self._p = p
        self._key = partition_key(p)
        self._batch = batch
        self._poll_s = poll_s
        self._kind_of = {t: k for k, t in topics.items()}
        ctl_kinds = [k for k in topics if k != REQUEST]
        self._next: Offsets = dict(resume or {})
        self._consumer = Consumer({
            "bootstrap.servers": brokers,
            "group.id": "notiflow-unused",  # assign() only: offsets live in snapshots
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 10,
            "fetch.min.bytes": 1,
            "queued.max.messages.kbytes": 16384,  # per consumer: bounds memory in bootstrap
            "auto.offset.reset": "earliest",
        })
        tps = [TopicPartition(topics[k], p, self._next.get(k, OFFSET_BEGINNING))
               for k in topics]
        # Bootstrap: the high watermarks of the control partitions right now.
        self._pending: dict[int, int] = {}
        for k in ctl_kinds:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topics[k], p), timeout=10, cached=False)
            if self._next.get(k, 0) < high:
                self._pending[k] = high
        self._req_tp = TopicPartition(topics[REQUEST], p)
        self._ctl_tps = {k: TopicPartition(topics[k], p) for k in ctl_kinds}
        self._held: list[Record] = []  # requests read but not emitted yet (see next_batch)
        self._lag_tps = {k: TopicPartition(t, p) for k, t in topics.items()}
        self._lag_at = 0.0  # next time the queue-lag gauge is due (monotonic s)
        self._paused = False
        self._consumer.assign(tps)
        if self._pending:
            self._consumer.pause([self._req_tp])
            log.info("partition %d: reading control topics up to %s before requests", p,
                     self._pending)

    def next_batch(self) -> list[Item]:
        msgs = self._consumer.consume(self._batch, self._poll_s)
        ctl: list[Record] = []
        kind_of = self._kind_of
        nxt = self._next
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("partition %d: consume error %s", self._p, err)
                continue
            kind = kind_of[m.topic()]
            rec = (kind, m.key(), m.value(), m.offset())
            if kind == REQUEST:
                self._held.append(rec)
            else:
                ctl.append(rec)
                nxt[kind] = rec[3] + 1
        if self._pending:
            for k in list(self._pending):
                if nxt.get(k, 0) >= self._pending[k]:
                    del self._pending[k]
            if not self._pending:
                log.info("partition %d: control topics loaded; reading requests", self._p)
                self._consumer.resume([self._req_tp])
        records = ctl
        if self._held and self._ctl_caught_up():
            records = ctl + self._held  # control records first: they were published earlier
            nxt[REQUEST] = self._held[-1][3] + 1
            self._held = []
        if len(self._held) >= self._batch and not self._paused:
            self._consumer.pause([self._req_tp])
            self._paused = True
        elif not self._held and self._paused and not self._pending:
            self._consumer.resume([self._req_tp])
            self._paused = False
        if time.monotonic() >= self._lag_at:
            self._export_lag()
        if not records:
            return []
        return [(self._key, (self._p, records))]

    def _export_lag(self) -> None:
        """``notiflow_queue_lag`` (high watermark - next offset) per topic partition, once a
        second, from the watermarks the fetches brought back (no broker round trip)."""
        self._lag_at = time.monotonic() + 1.0
        for kind, tp in self._lag_tps.items():
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                QUEUE_LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, high - self._next.get(kind, 0)))

    def _ctl_caught_up(self) -> bool:
        """Have we read every control record the broker had when it last answered
        a fetch?  Requests fetched by then wait for those, so a settings change published
        before a request is applied before it (cross-topic order within a partition)."""
        for k, tp in self._ctl_tps.items():
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high is not None and high >= 0 and self._next.get(k, 0) < high:
                return False
        return True

    def next_awake(self) -> datetime | None:
        return None  # consume() above already waits up to poll_s when idle

    def snapshot(self) -> Offsets:
        # held requests are not in the offsets: after a restart they are read again
        return dict(self._next)

    def close(self) -> None:
        self._consumer.close()


class UserPartitionedSource(FixedPartitionedSource[Item, Offsets]):
    """requests (or critical) + settings + devices (+ subscriptions + presence when given),
    partition p of each, as one input."""

    def __init__(self, brokers: str, requests_topic: str, settings_topic: str,
                 devices_topic: str, partitions: int, batch: int = 2000,
                 poll_s: float = 0.005, *, subscriptions_topic: str | None = None,
                 presence_topic: str | None = None) -> None:
        self._brokers = brokers
        self._topics = {REQUEST: requests_topic, SETTINGS: settings_topic, DEVICES: devices_topic}
        if subscriptions_topic:
            self._topics[SUBSCRIPTIONS] = subscriptions_topic
        if presence_topic:
            self._topics[PRESENCE] = presence_topic
        self._partitions = partitions
        self._batch = batch
        self._poll_s = poll_s

    def list_parts(self) -> list[str]:
        return [str(p) for p in range(self._partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: Offsets | None
                   ) -> _UserPartition:
        return _UserPartition(self._brokers, self._topics, int(for_part), resume_state,
                              self._batch, self._poll_s)

