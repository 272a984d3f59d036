"""Kafka input that reads a user partition's control topics before its requests.

The stock ``bytewax.connectors.kafka.KafkaSource`` treats every topic-partition on its
own, so nothing stops requests[p] from being decided before settings[p] was read
(a request decided on default settings: the cold-start bug the README's "Cold start" rules out).  This
source is built the same way (``assign()``, no consumer groups, offsets kept in Bytewax
recovery snapshots) but one source partition p owns requests[p] and the *control* topics'
partition p: settings and devices, and on the bulk lane subscriptions and presence (the
audience index of a fan-out).  It pauses requests[p] until every control partition but
presence (a hint) reaches where it ended at start, then holds each batch of requests until
those partitions were read up to where they ended once the batch was fetched
(sources/control_gate.py), so per-user order holds all the way to the join.

Without a snapshot, requests begin where ``NOTIFLOW_FRESH_START`` says
(sources/fresh_start.py), not at the beginning of the topic: the source commits the offsets
it snapshots to a consumer group for that.

Each poll becomes ONE item ``("p<p>", Batch)``: the flow works on batches.  A careful run
of the crash-loop breaker (operators/crash_loop.py) sends records one at a time instead,
each with a probe the sinks confirm, and hands a record that crashed the flow again and
again to the rejected topic.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from notiflow.crash_loop_store import RedisLoopStore, probe_key, scoped
from notiflow.metrics import QUEUE_LAG
from operators.crash_loop import CrashLoop
from operators.partition import DEVICES, PRESENCE, REQUEST, SETTINGS, SUBSCRIPTIONS, Record
from sources.control_gate import ControlGate
from sources.fresh_start import fresh_offset, source_group

log = logging.getLogger(__name__)

Offsets = dict[int, int]  # kind -> next offset to read


@dataclass(frozen=True, slots=True)
class Batch:
    """What one partition hands the flow: its records in order; a careful run's single
    record also carries the key the sinks confirm it under (``probe``), and a record
    the breaker skips carries why (``skip``: rejected, not processed)."""

    partition: int
    records: list[Record]
    probe: str | None = None
    skip: str | None = None


Item = tuple[str, Batch]


@dataclass(frozen=True, slots=True)
class CrashLoopConfig:
    redis_url: str
    lane: str
    scope: str  # the lane deployment's identity (NOTIFLOW_CRASH_LOOP_SCOPE)
    limit: int = 3
    blame_window_ms: int = 10_000


CAREFUL_LEASE_MS = 60_000  # a careful partition renews its entry in the lane's hash


def _now_ms() -> int:
    return int(time.time() * 1000)


def partition_key(p: int) -> str:
    return f"p{p:04d}"


@dataclass(frozen=True, slots=True)
class FreshStartConfig:
    """Where requests begin without a snapshot (sources/fresh_start.py)."""

    rule: str = "committed"
    marker_ttl_s: float = 48 * 3600


def _consumer_config(brokers: str, group: str) -> dict:
    return {
        "bootstrap.servers": brokers,
        "group.id": group,  # assign() only: commits are for a fresh start, never read else
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        # an open transaction on a control topic is not read (nor waited for) until it
        # commits: the watermarks this consumer is gated on are last stable offsets
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    }


class _UserPartition(StatefulSourcePartition[Item, Offsets]):
    def __init__(self, brokers: str, topics: dict[int, str], p: int, resume: Offsets | None,
                 batch: int, poll_s: float, crash_loop: CrashLoopConfig | None = None,
                 fresh: FreshStartConfig | None = None) -> None:
        self._p = p
        self._key = partition_key(p)
        self._batch = batch
        self._poll_s = poll_s
        self._kind_of = {t: k for k, t in topics.items()}
        ctl_kinds = [k for k in topics if k != REQUEST]
        group = source_group(topics[REQUEST])
        # watermark queries and fresh-start look-ups: a connection with no fetch outstanding
        self._side = Consumer(_consumer_config(brokers, group))
        self._next: Offsets = dict(resume or {})  # read (and emitted, but in careful runs)
        if REQUEST not in self._next:  # no snapshot (of the requests): a fresh start
            fresh = fresh or FreshStartConfig()
            off, why = fresh_offset(self._side, topics[REQUEST], p, fresh.rule, _now_ms(),
                                    fresh.marker_ttl_s)
            log.warning("partition %d: no snapshot: requests begin at %s (%s)", p,
                        "the beginning" if off == OFFSET_BEGINNING else f"offset {off}", why)
            if off != OFFSET_BEGINNING:
                self._next[REQUEST] = off
        self._emitted: Offsets = dict(self._next)  # what the snapshot says was handed on
        self._committed = self._next.get(REQUEST, -1)  # in the group (see snapshot)
        self._to_commit = self._committed
        self._loop_store: RedisLoopStore | None = None
        self._loop: CrashLoop | None = None
        self._queue: deque[Record] = deque()  # careful: read, not handed on yet
        self._probe: str | None = None  # careful: the record in flight
        self._probe_ms = 0
        self._run = f"{os.getpid()}-{_now_ms()}"
        self._lease_ms = 0  # careful: until when the lane's careful hash names us
        self._paused_for_careful = False
        self._waiting_turn = False
        if crash_loop is not None and crash_loop.limit > 0:
            self._lane = crash_loop.lane
            self._prefix = scoped(crash_loop.scope, crash_loop.lane)
            self._loop_store = RedisLoopStore(crash_loop.redis_url, self._prefix, p)
            self._loop = CrashLoop(self._loop_store, crash_loop.limit,
                                   crash_loop.blame_window_ms)
            self._loop.start(dict(self._next), _now_ms())
            if self._loop.convicted is not None:
                log.error("partition %d: record %s was in flight when the flow died %d times "
                          "in a row: it goes to the rejected topic", p, self._loop.convicted,
                          self._loop.state.deaths)
            self._loop_store.set_careful(_now_ms() + CAREFUL_LEASE_MS if self._loop.careful
                                         else 0)
            self._loop_store.drop_stale_turn()
            if self._loop.careful:
                log.warning("partition %d: the flow died %d times in a row from %s: records "
                            "up to %s go one at a time", p, self._loop.state.deaths,
                            self._next, self._loop.state.high)
        self._consumer = Consumer({
            **_consumer_config(brokers, group),
            "fetch.wait.max.ms": 10,
            "fetch.min.bytes": 1,
            "queued.max.messages.kbytes": 16384,  # per consumer: bounds memory in bootstrap
            "on_commit": self._on_commit,
        })
        tps = [TopicPartition(topics[k], p, self._next.get(k, OFFSET_BEGINNING))
               for k in topics]
        self._req_tp = TopicPartition(topics[REQUEST], p)
        gated = {k: TopicPartition(topics[k], p) for k in ctl_kinds if k != PRESENCE}
        self._gate = ControlGate(self._consumer, self._side, gated, self._next)
        self._held: list[Record] = []  # requests read but not emitted yet (see next_batch)
        self._lag_tps = {k: TopicPartition(t, p) for k, t in topics.items()}
        self._lag_at = 0.0  # next time the queue-lag gauge is due (monotonic s)
        self._paused = False
        self._consumer.assign(tps)
        # Bootstrap: requests wait until the control partitions are read up to where they
        # end now (paused, so that a long load does not pile requests up in memory).
        self._boot: Offsets | None = self._gate.targets()
        if self._gate.reached(self._boot):
            self._boot = None
        else:
            self._consumer.pause([self._req_tp])
            log.info("partition %d: reading control topics up to %s before requests", p,
                     self._boot)

    def next_batch(self) -> list[Item]:
        if self._loop is not None:
            if self._loop.careful:
                return self._careful_next()
            assert self._loop_store is not None
            self._paused_for_careful = self._loop_store.others_careful(_now_ms(),
                                                                      time.monotonic())
            if self._paused_for_careful:
                return []  # another partition pins a crash: nothing else may run meanwhile
        records = self._read()
        if not records:
            return []
        if self._loop is not None:
            self._loop.emitting(self._next, _now_ms())
        self._emitted = dict(self._next)
        return [(self._key, Batch(self._p, records))]

    def _careful_next(self) -> list[Item]:
        """One record at a time, each after the sinks confirmed the one before."""
        loop = self._loop
        assert loop is not None and self._loop_store is not None
        now = _now_ms()
        if self._probe is not None:
            if (not self._loop_store.probe_done(self._probe)
                    and now - self._probe_ms < loop.blame_window_ms):
                loop.alive(now)
                return []
            self._loop_store.end_turn(self._probe)
            self._probe = None
        if loop.past_careful_range(self._emitted):
            return self._end_careful()
        if now >= self._lease_ms - CAREFUL_LEASE_MS // 2:  # still careful: say so again
            self._lease_ms = now + CAREFUL_LEASE_MS
            self._loop_store.set_careful(self._lease_ms)
        if not self._queue:
            self._queue.extend(self._read())
            if not self._queue:
                return []
        rec = self._queue[0]
        rid = (rec[0], rec[3])
        if not loop.in_careful_range(rid):
            return self._end_careful()
        probe = probe_key(self._prefix, self._p, self._run, rid[0], rid[1])
        if not self._loop_store.take_turn(probe, loop.blame_window_ms):
            self._waiting_turn = True
            return []  # another careful partition's record is in flight
        self._waiting_turn = False
        self._queue.popleft()
        self._probe = probe
        self._probe_ms = now
        loop.leaving(rid, now)
        self._emitted[rec[0]] = rec[3] + 1
        skip = None
        if loop.skipped(rid):
            skip = (f"crashed the flow {loop.state.deaths} times: skipped by the crash-loop breaker "
                    f"(lane {self._lane}, partition {self._p}, offset {rec[3]})")
        return [(self._key, Batch(self._p, [rec], self._probe, skip))]

    def _end_careful(self) -> list[Item]:
        """Past where the flow died: batches again, starting with what is queued."""
        assert self._loop is not None and self._loop_store is not None
        self._loop.finish_careful()
        self._loop_store.set_careful(0)
        log.info("partition %d: past %s, where the flow died: batches again", self._p,
                 self._loop.state.high)
        records = list(self._queue)
        self._queue.clear()
        self._emitted = dict(self._next)
        return [(self._key, Batch(self._p, records))] if records else []

    def _read(self) -> list[Record]:
        """One poll: control records, and the requests that may go after them."""
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
        if self._boot is not None and self._gate.reached(self._boot):
            self._boot = None
            log.info("partition %d: control topics loaded; reading requests", self._p)
            self._consumer.resume([self._req_tp])
        records = ctl
        n = self._gate.release(len(self._held))
        if n:
            # control records first: they were published earlier
            records = ctl + self._held[:n]
            nxt[REQUEST] = self._held[n - 1][3] + 1
            del self._held[:n]
        if len(self._held) >= self._batch and not self._paused:
            self._consumer.pause([self._req_tp])
            self._paused = True
        elif not self._held and self._paused and self._boot is None:
            self._consumer.resume([self._req_tp])
            self._paused = False
        if time.monotonic() >= self._lag_at:
            self._export_lag()
        return records

    def _export_lag(self) -> None:
        """``notiflow_queue_lag`` (high watermark - next offset) per topic partition, once a
        second, from the watermarks the fetches brought back (no broker round trip)."""
        self._lag_at = time.monotonic() + 1.0
        for kind, tp in self._lag_tps.items():
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                QUEUE_LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, high - self._next.get(kind, 0)))

    def next_awake(self) -> datetime | None:
        if self._probe is not None or self._waiting_turn:  # careful: look again soon
            return datetime.now(UTC) + timedelta(milliseconds=2)
        if self._paused_for_careful:
            return datetime.now(UTC) + timedelta(milliseconds=20)
        return None  # consume() above already waits up to poll_s when idle

    def snapshot(self) -> Offsets:
        # held requests (and a careful run's queue) are not in the offsets: after a
        # restart they are read again
        snap = dict(self._emitted)
        self._commit(self._to_commit)
        self._to_commit = snap.get(REQUEST, -1)
        return snap

    def _commit(self, offset: int) -> None:
        """Commit the requests offset of the snapshot before this one to the source's
        group, for a fresh start (sources/fresh_start.py): one snapshot behind, so that
        what was in flight at that one had a snapshot interval to be answered."""
        if offset < 0 or offset == self._committed:
            return
        try:
            self._consumer.commit(offsets=[TopicPartition(self._req_tp.topic, self._p, offset)],
                                  asynchronous=True)
            self._committed = offset
        except KafkaException as e:  # only a fresh start reads it: log, go on
            log.warning("partition %d: committing offset %d failed: %s", self._p, offset, e)

    def _on_commit(self, err: KafkaError | None, _partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("partition %d: committing offsets failed: %s", self._p, err)

    def close(self) -> None:
        self._consumer.close()
        self._side.close()
        if self._loop_store is not None:
            self._loop_store.close()


class UserPartitionedSource(FixedPartitionedSource[Item, Offsets]):
    """requests (or critical) + settings + devices (+ subscriptions + presence when given),
    partition p of each, as one input."""

    def __init__(self, brokers: str, requests_topic: str, settings_topic: str,
                 devices_topic: str, partitions: int, batch: int = 2000,
                 poll_s: float = 0.005, *, subscriptions_topic: str | None = None,
                 presence_topic: str | None = None,
                 crash_loop: CrashLoopConfig | None = None,
                 fresh: FreshStartConfig | None = None) -> None:
        self._brokers = brokers
        self._crash_loop = crash_loop
        if fresh is None:  # the settings of this process
            from notiflow.config import get_settings

            cfg = get_settings()
            fresh = FreshStartConfig(cfg.fresh_start, cfg.sent_marker_ttl_s)
        self._fresh = fresh
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
                              self._batch, self._poll_s, self._crash_loop, self._fresh)

