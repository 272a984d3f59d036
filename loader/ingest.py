"""Consume notify.receipts and insert it into the store in batches, resuming from stored offsets.

Partitions are taken with ``assign()`` (Tansu's consumer groups are slow, and one loader owns
the store anyway); the next offset per partition is written to ``notiflow.loader_offsets``
right after each batch's insert. Delivery is at-least-once: a crash between the insert and
the offsets row replays that batch (at most ~0.2 s or 50k rows) on restart.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from clickhouse_connect.driver.exceptions import ClickHouseError
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from loader.store import Store

log = logging.getLogger("loader.ingest")

_WATERMARK_EVERY_S = 0.5
_METADATA_EVERY_S = 10.0


@dataclass
class Progress:
    """What the HTTP endpoint reports; written by the ingest thread, read under ``cond``."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    topic_ready: bool = False
    rows_total: int = 0  # rows in the receipts table
    rows_loaded: int = 0  # rows this process inserted
    bad_rows: int = 0
    batches: int = 0
    insert_errors: int = 0
    lag: int | None = None  # messages on the topic not yet in the store
    lag_checked_at: float = 0.0  # monotonic start time of the check behind ``lag``
    last_batch_rows: int = 0
    last_batch_s: float = 0.0
    partitions: dict[int, int] = field(default_factory=dict)  # next offset per partition

    def snapshot(self) -> dict:
        with self.cond:
            return {
                "topic_ready": self.topic_ready,
                "rows_loaded": self.rows_total,
                "rows_loaded_by_this_run": self.rows_loaded,
                "bad_rows": self.bad_rows,
                "batches": self.batches,
                "insert_errors": self.insert_errors,
                "lag": self.lag,
                "last_batch_rows": self.last_batch_rows,
                "last_batch_s": round(self.last_batch_s, 4),
                "offsets": {str(p): o for p, o in sorted(self.partitions.items())},
            }


class Ingestor:
    """One consumer over every partition of the receipts topic, feeding ``Store.insert``."""

    def __init__(
        self,
        store: Store,
        brokers: str,
        topic: str,
        progress: Progress,
        batch_rows: int = 50_000,
        flush_s: float = 0.2,
    ) -> None:
        """Args: store to insert into; Kafka ``brokers``; ``topic`` to read; shared ``progress``;
        flush when ``batch_rows`` rows are pending or the oldest is ``flush_s`` old."""
        self.store = store
        self.topic = topic
        self.progress = progress
        self.batch_rows = batch_rows
        self.flush_s = flush_s
        self._consumer = Consumer(
            {
                "bootstrap.servers": brokers,
                "group.id": "notiflow-loader",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                "fetch.min.bytes": 1,
                "enable.partition.eof": False,
                "topic.metadata.refresh.interval.ms": 10_000,
            }
        )
        self._assigned: set[int] = set()
        self._next: dict[int, int] = {}  # next offset per partition, as stored
        self._pending: list[bytes] = []
        self._pending_rows = 0
        self._pending_offsets: dict[int, int] = {}
        self._first_at: float | None = None

    # ---- life cycle ---------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then flush what is pending and close."""
        try:
            with self.progress.cond:
                self.progress.rows_total = self.store.count_rows()
            if not self._wait_for_topic(stop):
                return
            self._loop(stop)
            self._flush(final=True)
        finally:
            self._consumer.close()

    def _wait_for_topic(self, stop: threading.Event) -> bool:
        """Block until the topic exists with partitions (retrying), then assign them."""
        warned = False
        while not stop.is_set():
            partitions = self._topic_partitions()
            if partitions:
                self._assign(partitions)
                with self.progress.cond:
                    self.progress.topic_ready = True
                    self.progress.cond.notify_all()
                return True
            if not warned:
                log.info("topic %s not there yet; retrying", self.topic)
                warned = True
            stop.wait(0.5)
        return False

    def _topic_partitions(self) -> list[int]:
        try:
            md = self._consumer.list_topics(self.topic, timeout=2.0)
        except KafkaException as exc:
            log.debug("metadata: %s", exc)
            return []
        t = md.topics.get(self.topic)
        if t is None or t.error is not None:
            return []
        return sorted(t.partitions)

    def _assign(self, partitions: list[int]) -> None:
        """Assign new partitions at their stored offsets (or the beginning)."""
        stored = self.store.load_offsets(self.topic)
        tps = []
        for p in partitions:
            if p in self._assigned:
                continue
            off = stored.get(p, OFFSET_BEGINNING)
            if off >= 0:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=5.0
                )
                if off > high:  # the broker lost the topic (Tansu keeps it in memory only)
                    log.warning(
                        "partition %d: stored offset %d is past the end %d; reading from %d",
                        p,
                        off,
                        high,
                        low,
                    )
                    off = low
                self._next[p] = off
            tps.append(TopicPartition(self.topic, p, off))
            self._assigned.add(p)
        if tps:
            self._consumer.incremental_assign(tps)
            log.info("assigned %s", {tp.partition: tp.offset for tp in tps})

    # ---- the loop -----------------------------------------------------------------

    def _loop(self, stop: threading.Event) -> None:
        last_marks = 0.0
        last_meta = time.monotonic()
        while not stop.is_set():
            msgs = self._consumer.consume(num_messages=10_000, timeout=0.05)
            now = time.monotonic()
            for m in msgs:
                err = m.error()
                if err is not None:
                    log.warning("consume error: %s", err)
                    continue
                self._pending_offsets[m.partition()] = m.offset() + 1
                value = m.value()
                if not value:
                    continue
                if value.endswith(b"\n"):
                    value = value.rstrip(b"\n")
                    if not value:
                        continue
                self._pending.append(value)
                self._pending_rows += value.count(b"\n") + 1
            if self._pending_offsets and self._first_at is None:
                self._first_at = now
            if self._first_at is not None and (
                self._pending_rows >= self.batch_rows or now - self._first_at >= self.flush_s
            ):
                self._flush()
            if now - last_marks >= _WATERMARK_EVERY_S:
                self._update_lag(now)
                last_marks = now
            if now - last_meta >= _METADATA_EVERY_S:
                self._assign(self._topic_partitions())  # pick up added partitions
                last_meta = now

    def _flush(self, final: bool = False) -> None:
        """Insert the pending rows as one batch, then record the offsets after them."""
        if not self._pending_offsets:
            return
        data = b"\n".join(self._pending)
        t0 = time.perf_counter()
        attempt = 0
        while True:
            try:
                result = self.store.insert(data) if data else None
                self.store.save_offsets(self.topic, self._pending_offsets)
                break
            except ClickHouseError as exc:
                attempt += 1
                with self.progress.cond:
                    self.progress.insert_errors += 1
                if final and attempt >= 3:
                    log.error("giving up on the last batch at shutdown (will be re-read): %s", exc)
                    return
                log.error("insert failed (attempt %d), retrying: %s", attempt, exc)
                time.sleep(min(5.0, 0.2 * 2**attempt))
        elapsed = time.perf_counter() - t0
        self._next.update(self._pending_offsets)
        with self.progress.cond:
            p = self.progress
            if result is not None:
                p.rows_total += result.written
                p.rows_loaded += result.written
                p.bad_rows += result.bad
                p.last_batch_rows = result.written
            p.batches += 1
            p.last_batch_s = elapsed
            p.partitions = dict(self._next)
            p.cond.notify_all()
        log.debug("batch rows=%d elapsed=%.3f", self._pending_rows, elapsed)
        self._pending = []
        self._pending_rows = 0
        self._pending_offsets = {}
        self._first_at = None

    def _update_lag(self, started: float) -> None:
        """Messages on the broker not yet in the store, from fresh high watermarks."""
        lag = 0
        for p in sorted(self._assigned):
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=2.0
                )
            except KafkaException as exc:
                log.debug("watermarks: %s", exc)
                return
            pos = self._next.get(p, 0)
            lag += max(0, high - max(pos, 0))
        with self.progress.cond:
            self.progress.lag = lag
            self.progress.lag_checked_at = started
            self.progress.cond.notify_all()
