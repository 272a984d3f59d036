"""The Bytewax adapters around engine-free logic: PartitionProcessor and RetryQueue as state.

The clock is read here and passed in, so operators/ never calls ``now()``.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from bytewax.operators import StatefulBatchLogic

from notiflow.config import Settings
from operators.partition import PartitionProcessor, Routed
from operators.retry_queue import RetryQueue
from operators.user_state import UserState
from schemas.retry import RetryEnvelope
from schemas.task import DeliveryTask, decode_task, encode_task
from sinks.delivery import BackgroundDelivery, Job, shared
from sources.user_partitions import Batch

Snap = tuple[int, dict[str, object]]


class PartitionLogic(StatefulBatchLogic[Batch, Routed, Snap]):
    def __init__(self, cfg: Settings, lane: str, resume: Snap | None) -> None:
        self._cfg = cfg
        self._lane = lane
        self._crash_marker = cfg.fault_crash_marker.encode()
        self._proc: PartitionProcessor | None = None
        if resume is not None:
            p, snap = resume
            self._proc = self._new(p)
            self._proc.restore(snap)

    def _new(self, p: int) -> PartitionProcessor:
        c = self._cfg
        return PartitionProcessor(p, c.partitions, lane=self._lane,
                                  max_request_bytes=c.max_request_bytes,
                                  dedup_ttl_ms=c.dedup_ttl_s * 1000, escalation=c.escalation,
                                  fanout_chunk=c.fanout_chunk,
                                  presence_window_s=c.presence_window_s,
                                  hold_max=c.hold_max_per_partition,
                                  bundle_windows=c.bundle_windows_s,
                                  bundle_actors=c.bundle_actors,
                                  users=UserState(max_devices=c.max_devices_per_user))

    def on_batch(self, values: list[Batch]) -> tuple[list[Routed], bool]:
        now_ms = int(time.time() * 1000)
        out = []
        for b in values:
            if self._proc is None:
                self._proc = self._new(b.partition)
            if b.skip is not None:
                r = self._proc.skip(b.records, b.skip, now_ms)
            else:
                if self._crash_marker:
                    self._fault_crash(b)
                r = self._proc.process(b.records, now_ms)
            r.probe = b.probe
            out.append(r)
        return out + self._tick(now_ms), StatefulBatchLogic.RETAIN

    def _fault_crash(self, b: Batch) -> None:
        """Fault injection (NOTIFLOW_FAULT_CRASH_MARKER, tests only): die the way a
        segfault does, with no exception to catch and no cleanup."""
        for _kind, _key, value, _offset in b.records:
            if value is not None and self._crash_marker in value:
                os._exit(70)

    def _tick(self, now_ms: int) -> list[Routed]:
        if self._proc is None:
            return []
        wake = self._proc.next_wake_ms()
        if wake is None or wake > now_ms:
            return []
        return [self._proc.tick(now_ms)]

    def on_notify(self) -> tuple[list[Routed], bool]:
        return self._tick(int(time.time() * 1000)), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Routed], bool]:
        return [], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        wake = None if self._proc is None else self._proc.next_wake_ms()
        return None if wake is None else datetime.fromtimestamp(wake / 1000, tz=UTC)

    def snapshot(self) -> Snap:
        assert self._proc is not None
        return (self._proc.partition, self._proc.snapshot())


def partition_logic(cfg: Settings, lane: str):
    """Builder for ``op.stateful_batch``."""
    return lambda resume: PartitionLogic(cfg, lane, resume)


RetrySnap = tuple[list[bytes], list]


class RetryWaitLogic(StatefulBatchLogic[RetryEnvelope, list[RetryEnvelope], RetrySnap]):
    """Holds retries until they are due, on Bytewax timers (state survives restarts)."""

    def __init__(self, resume: RetrySnap | None) -> None:
        self._q = RetryQueue.restore(resume) if resume else RetryQueue()

    def _due(self) -> tuple[list[list[RetryEnvelope]], bool]:
        due = self._q.due(int(time.time() * 1000))
        return ([due] if due else []), StatefulBatchLogic.RETAIN

    def on_batch(self, values: list[RetryEnvelope]) -> tuple[list[list[RetryEnvelope]], bool]:
        for env in values:
            self._q.add(env)
        return self._due()

    def on_notify(self) -> tuple[list[list[RetryEnvelope]], bool]:
        return self._due()

    def on_eof(self) -> tuple[list[list[RetryEnvelope]], bool]:
        return [], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        due = self._q.next_due_ms()
        return None if due is None else datetime.fromtimestamp(due / 1000, tz=UTC)

    def snapshot(self) -> RetrySnap:
        return self._q.snapshot()


def retry_wait_logic(resume: RetrySnap | None) -> RetryWaitLogic:
    return RetryWaitLogic(resume)


DeliverSnap = list[bytes]  # the tasks handed to the channel's thread and not done: encoded
POLL_DONE = timedelta(milliseconds=50)  # how often a step with work in flight looks again


class DeliverLogic(StatefulBatchLogic[list[DeliveryTask], None, DeliverSnap]):
    """A partition's sends of one channel, owned by the flow: handed to the process's
    sending thread (``BackgroundDelivery``), so routing the next batch overlaps sending this
    one, and kept in this step's snapshot until they are done.  A restart hands the
    snapshot's tasks over again; the sent-markers skip those that had gone out."""

    def __init__(self, bg: BackgroundDelivery, resume: DeliverSnap | None) -> None:
        self._bg = bg
        self._jobs: list[Job] = []
        if resume:
            self._hand([decode_task(raw) for raw in resume])

    def _hand(self, tasks: list[DeliveryTask], probe: str | None = None) -> None:
        job = Job(tasks, probe)
        self._jobs.append(job)
        self._bg.submit(job)

    def on_batch(self, values: list[list[DeliveryTask]]) -> tuple[list[None], bool]:
        self._jobs = [j for j in self._jobs if not j.done]
        for tasks in values:
            self._hand(list(tasks), getattr(tasks, "probe", None))
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[None], bool]:
        self._jobs = [j for j in self._jobs if not j.done]
        # nothing in flight: no state to keep (a new batch builds the step again)
        return [], StatefulBatchLogic.DISCARD if not self._jobs else StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[None], bool]:
        return [], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        # while work is in flight, wake up to notice it is done (and snapshot that)
        return datetime.now(UTC) + POLL_DONE if self._jobs else None

    def snapshot(self) -> DeliverSnap:
        return [encode_task(t) for j in self._jobs if not j.done for t in j.tasks]


def deliver_logic(channel: str, cfg: Settings):
    """Builder for the deliver step of ``channel`` (``op.stateful_batch``)."""
    return lambda resume: DeliverLogic(shared(channel, cfg), resume)
