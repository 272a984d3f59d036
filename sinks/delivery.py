"""One channel's delivery: sent-markers, send, settle, publish — the part both flows share.

``ChannelDelivery.deliver(tasks)`` is synchronous: when it returns, every task has an
outcome that is published (receipts, retries, dead letters, device retirements flushed to
Kafka).  Sent-markers are written as the provider's answers arrive (``MarkerWriter``), not
after the whole batch, so a kill -9 can re-send at most what was on the wire plus one small
group of answers not yet marked: the *transport window* (README, Delivery guarantees).

A task whose marker already exists was sent before a crash: it is not sent again, and its
``sent`` receipt is published again (the first may not have reached Kafka before the crash);
the loader stores a receipt once (schemas/receipt.py's identity), so the copy adds no row.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from notiflow.config import Settings
from notiflow.crash_loop_store import ProbeAcks
from notiflow.metrics import DEAD_LETTERS, DELIVERIES, MARKERS_UNAVAILABLE, RETRIES
from notiflow.topics import CRITICAL, DEVICES, DLQ, RECEIPTS, RETRY, name, partition_for
from operators.backoff import BackoffPolicy
from schemas.retry import encode_envelope
from schemas.task import DeliveryTask
from sinks.channels import SENDERS, settle
from sinks.kafka_out import flush, produce, produce_receipts, producer
from sinks.markers import SentMarkers, marker_key
from sinks.results import SendResult, isolated

log = logging.getLogger(__name__)

REPLAYED = "replayed: already sent before a restart (sent-marker)"
MARK_EVERY = 32  # answers marked in one Redis round trip, at most
MARK_WITHIN_S = 0.002  # ... or as soon as the oldest unmarked answer is this old


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


class MarkerWriter:
    """Buffers ``sent`` answers as they arrive and writes their markers in small groups:
    every ``MARK_EVERY`` answers or ``MARK_WITHIN_S`` after the oldest, and at ``flush``."""

    def __init__(self, markers: SentMarkers,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._m = markers
        self._clock = clock
        self._buf: list[DeliveryTask] = []
        self._since = 0.0
        self.groups = 0  # Redis round trips (for tests and the benchmark)

    def answer(self, r: SendResult) -> None:
        if r.status != "sent":
            return
        if not self._buf:
            self._since = self._clock()
        self._buf.append(r.task)
        if len(self._buf) >= MARK_EVERY or self._clock() - self._since >= MARK_WITHIN_S:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._m.mark(self._buf)
            self._buf = []
            self.groups += 1


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


class ChannelDelivery:
    """Sends one channel's tasks and publishes what became of them (not thread-safe: one
    per thread; the sender's clients refuse a second thread)."""

    def __init__(self, channel: str, cfg: Settings) -> None:
        self.channel = channel
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

    def deliver(self, tasks: list[DeliveryTask]) -> None:
        if not tasks:
            return
        t0 = time.perf_counter()
        # a replay can put two copies of one send (one retry chain from before a crash, one
        # from after) into the same batch, where the markers cannot tell them apart yet
        tasks, again = unique_sends(tasks)
        results = [SendResult(t, "duplicate", "another copy of this send is in the batch")
                   for t in again]
        if self._markers is not None:
            seen = self._markers.unavailable
            tasks, marked = self._markers.unsent(tasks)
            results += [SendResult(t, "sent", REPLAYED) for t in marked]
            if self._markers.unavailable != seen:
                MARKERS_UNAVAILABLE.inc()
        results += self._send(tasks) if tasks else []
        self._publish(results)
        log.debug("%s n=%d elapsed=%.4f", self.channel, len(results), time.perf_counter() - t0)

    def _send(self, tasks: list[DeliveryTask]) -> list[SendResult]:
        """Send, marking as the answers arrive: one by one where the sender reports them
        (push), else after each group of ``MARK_EVERY`` tasks (email, SMS)."""
        # a raise nobody foresaw fails the task that raises, not the batch (or the lane)
        if self._markers is None:
            return isolated(self._sender.send, tasks, self.channel)
        w = MarkerWriter(self._markers)
        results: list[SendResult] = []
        if getattr(self._sender, "streams_answers", False):
            results = isolated(lambda part: self._sender.send(part, on_result=w.answer),
                               tasks, self.channel)
        else:
            for i in range(0, len(tasks), MARK_EVERY):
                part = isolated(self._sender.send, tasks[i:i + MARK_EVERY], self.channel)
                for r in part:
                    w.answer(r)
                w.flush()
                results += part
        w.flush()
        return results

    def _publish(self, results: list[SendResult]) -> None:
        s = settle(results, _now_ms(), self._policy, self._rng, self._cfg.escalation)
        prod = self._prod
        produce_receipts(prod, self._receipts, s.receipts, self._cfg.receipts_batch_rows)
        count(s)
        parts = self._cfg.partitions
        for key, value, user in s.retire:
            produce(prod, self._devices, key, value, partition_for(user, parts))
        for env in s.retry:
            produce(prod, self._retry, env.task.user_id.encode(), encode_envelope(env),
                    partition_for(env.task.user_id, parts))
        for env in s.dead:
            produce(prod, self._dlq, env.task.user_id.encode(), encode_envelope(env))
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
            produce(prod, self._critical, user.encode(), req, partition_for(user, parts))
        flush(prod)

    def close(self) -> None:
        self._sender.close()
        if self._markers is not None:
            self._markers.close()
        flush(self._prod)


class Job:
    """One batch handed to a ``BackgroundDelivery``; ``done`` once every task in it has
    an outcome that is published (and its careful-run probe, if any, confirmed)."""

    __slots__ = ("tasks", "probe", "done")

    def __init__(self, tasks: list[DeliveryTask], probe: str | None = None) -> None:
        self.tasks = tasks
        self.probe = probe
        self.done = False


class BackgroundDelivery:
    """A channel's sends on their own thread, so the flow routes the next batch while this
    one is on the wire (pycurl, Redis and Kafka calls release the GIL while they wait).

    One per process and channel (``shared``): every worker's deliver step hands it jobs.
    ``submit`` blocks while ``max_queued`` tasks wait (backpressure on the flow).  What is
    submitted and not ``done`` is the deliver step's state, in its snapshot: a restart sends
    it again, and the sent-markers skip what had gone out."""

    RETRY_CAP_S = 30.0

    def __init__(self, channel: str, cfg: Settings, max_queued: int = 8000,
                 max_round: int = 4000) -> None:
        self.channel = channel
        self._cfg = cfg
        self._max_queued = max_queued
        self._max_round = max_round
        self._cv = threading.Condition()
        self._queue: list[Job] = []
        self._queued = 0
        self._acks = ProbeAcks(cfg.redis_url)
        self._thread = threading.Thread(target=self._run, name=f"deliver-{channel}",
                                        daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cv:
            while self._queued >= self._max_queued:
                self._cv.wait()
            self._queue.append(job)
            self._queued += len(job.tasks)
            self._cv.notify_all()

    def _take(self) -> list[Job]:
        with self._cv:
            while not self._queue:
                self._cv.wait()
            jobs: list[Job] = []
            n = 0
            while self._queue and (not jobs or n + len(self._queue[0].tasks) <= self._max_round):
                job = self._queue.pop(0)
                jobs.append(job)
                n += len(job.tasks)
            return jobs

    def _run(self) -> None:
        delivery = ChannelDelivery(self.channel, self._cfg)  # its clients live on this thread
        while True:
            jobs = self._take()
            tasks = [t for j in jobs for t in j.tasks]
            wait = 0.5
            while True:
                try:
                    delivery.deliver(tasks)
                    break
                except Exception:  # Kafka or Redis gone: the flow waits (backpressure)
                    log.exception("%s: delivering %d tasks failed; again in %.1f s",
                                  self.channel, len(tasks), wait)
                    time.sleep(wait)  # a back-off, not a wait for a result
                    wait = min(wait * 2, self.RETRY_CAP_S)
            for j in jobs:
                if j.probe is not None:  # a careful run's record: written, the next may go
                    self._acks.ack(j.probe, self.channel)
                j.done = True
            with self._cv:
                self._queued -= len(tasks)
                self._cv.notify_all()


_shared: dict[tuple[str, int], BackgroundDelivery] = {}
_shared_lock = threading.Lock()


def shared(channel: str, cfg: Settings) -> BackgroundDelivery:
    """The process's ``BackgroundDelivery`` for ``channel`` (built on first use)."""
    with _shared_lock:
        k = (channel, id(cfg))
        if k not in _shared:
            _shared[k] = BackgroundDelivery(channel, cfg, cfg.deliver_queue_max,
                                            cfg.deliver_round_max)
        return _shared[k]
