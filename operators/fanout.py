"""Fan-out jobs: one audience request expanded over a partition's members, in chunks.

How an audience request travels (see README "Audiences"):

1. A producer publishes it once (any partition).  The partition that reads it *scatters*
   it: one copy to every partition under the reserved Kafka key ``FANOUT_KEY``, records
   the job (``job_record``) and emits the pull-on-read entry once (``pull_entry``).
2. Each partition that reads a scattered copy dedups it once (the request's dedup key with
   the audience key as recipient: one id per job, not 1M per-recipient ids), snapshots
   its local members into a ``FanoutJob`` and walks them ``chunk`` at a time on the
   partition's timer, so ordinary requests interleave between chunks.
3. Hybrid: a member seen within the presence window is routed now (push, in-app, ... with
   their preferences); the rest are only counted: no per-user work at all, they read the
   pull-on-read entry when they next open the app.

A job (request bytes + members not yet expanded + counters) is in the partition's snapshot,
so a crash resumes at the last snapshot's cursor; sends replayed from there are stopped by
the sinks' sent-markers, and the progress counters are absolute per partition (an HSET of
totals, not an HINCRBY), so a replay does not inflate them either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec
import orjson

from schemas.request import NotificationRequest, decode_request

# Kafka key of a scattered copy: not a user id any producer sends (it starts with NUL),
# so a partition knows to expand it locally and never scatter it again.
FANOUT_KEY = b"\x00fanout"

_enc = msgspec.msgpack.Encoder()
_members_dec = msgspec.msgpack.Decoder(list[str])


@dataclass(slots=True, eq=False)
class FanoutJob:
    """One audience request being expanded over this partition's members."""

    nid: str
    request: bytes  # the encoded request: decoded once per chunk, compact in snapshots
    members: list[str]
    hybrid: bool
    cursor: int = 0  # members[:cursor] are done
    base: int = 0  # members expanded before a restore (the snapshot keeps only the rest)
    routed_now: int = 0
    deferred: int = 0
    stopped: bool = False  # expired before every member was expanded
    due_ms: int = 0  # send_at: not expanded before then
    _req: NotificationRequest | None = field(default=None, repr=False)

    @property
    def expanded(self) -> int:
        return self.base + self.cursor

    @property
    def left(self) -> int:
        return len(self.members) - self.cursor

    def decoded(self) -> NotificationRequest:
        if self._req is None:
            # validated when it was first read; the limit only guards against a bad snapshot
            self._req = decode_request(self.request, max_bytes=1 << 30)
        return self._req

    def progress(self, partition: int) -> Progress:
        return (self.nid, partition, {"expanded": self.expanded, "routed_now": self.routed_now,
                                      "deferred": self.deferred,
                                      "done": int(self.left == 0 or self.stopped)})


# (notification id, partition, {"expanded", "routed_now", "deferred", "done"}): totals so far
Progress = tuple[str, int, dict[str, int]]
# (nid, request bytes, members left (msgpack), hybrid, expanded before, routed_now, deferred,
#  due ms)
JobSnap = tuple[str, bytes, bytes, bool, int, int, int, int]


class FanoutJobs:
    """The partition's jobs, oldest first: a job finishes before the next one starts, so
    the first audience's members are not kept waiting by a later broadcast."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: deque[FanoutJob] = deque()

    def add(self, job: FanoutJob) -> None:
        self.queue.append(job)

    def take(self, budget: int, now_ms: int) -> Iterator[tuple[FanoutJob, list[str]]]:
        """Up to ``budget`` members over the oldest due jobs, as (job, members) slices.
        The cursor moves when a slice is handed out; a finished job leaves the queue."""
        for job in list(self.queue):
            if budget <= 0:
                return
            if job.due_ms > now_ms:
                continue
            n = min(budget, job.left)
            users = job.members[job.cursor:job.cursor + n]
            job.cursor += n
            budget -= n
            if job.left == 0:
                self._remove(job)
            yield job, users

    def next_due_ms(self) -> int | None:
        """When a job has members to expand next (0: now), or None."""
        return min((j.due_ms for j in self.queue), default=None)

    def _remove(self, job: FanoutJob) -> None:
        for i, j in enumerate(self.queue):
            if j is job:
                del self.queue[i]
                return

    def drop(self, job: FanoutJob) -> int:
        """Stop a job (it expired); returns how many members it left unexpanded."""
        job.stopped = True
        self._remove(job)
        return job.left

    def pending(self) -> int:
        return sum(j.left for j in self.queue)

    def __bool__(self) -> bool:
        return bool(self.queue)

    def __len__(self) -> int:
        return len(self.queue)

    def snapshot(self) -> list[JobSnap]:
        return [(j.nid, j.request, _enc.encode(j.members[j.cursor:]), j.hybrid, j.expanded,
                 j.routed_now, j.deferred, j.due_ms) for j in self.queue]

    @classmethod
    def restore(cls, snap: list[JobSnap]) -> FanoutJobs:
        jobs = cls()
        for nid, request, members, hybrid, done, routed_now, deferred, due_ms in snap:
            jobs.add(FanoutJob(nid, request, _members_dec.decode(members), hybrid, base=done,
                               routed_now=routed_now, deferred=deferred, due_ms=due_ms))
        return jobs


def scatter_dedup_key(req: NotificationRequest) -> str:
    """Dedup of the whole audience request where it is scattered (a producer's retry)."""
    assert req.audience is not None
    return req.dedup_key("scatter>" + req.audience.key())


def job_dedup_key(req: NotificationRequest) -> str:
    """Dedup of a scattered copy on each partition: one id per job and partition."""
    assert req.audience is not None
    return req.dedup_key(req.audience.key())


def job_record(req: NotificationRequest, partitions: int, now_ms: int) -> dict[str, str]:
    """The job's fields in Redis ``nf:fanout:{id}`` (counters are added per partition)."""
    assert req.audience is not None
    return {"audience": req.audience.key(), "hybrid": str(int(req.audience.hybrid)),
            "type": req.type, "partitions": str(partitions), "created_ms": str(now_ms),
            "send_at": str(req.send_at or 0)}


def pull_entry(req: NotificationRequest) -> bytes:
    """The pull-on-read entry: the in-app inbox entry (sinks/inapp.py ``entry``) plus
    ``expires_ms``, so a reader can skip it after the request expired; the producer and
    dedup parts when set, so the reader's sent-marker is the one a member pushed it has."""
    e = {"id": req.id, "type": req.type, "title": req.title, "body": req.body,
         "data": req.data, "collapse_key": req.collapse_key,
         "created_ms": req.created_at, "expires_ms": req.expires_at or 0}
    if req.producer:  # with the dedup parts, what names its sends (schemas/identity.py)
        e["producer"] = req.producer
    if req.dedup is not None:
        e["dedup"] = req.event()
    return orjson.dumps(e)


COUNTERS = ("expanded", "routed_now", "deferred")


def summarize_progress(fields: dict[str, str]) -> dict[str, object]:
    """A job's Redis hash (``nf:fanout:{id}``) as totals: the job fields, the counters
    summed over partitions, and how many partitions have finished."""
    job: dict[str, object] = {}
    totals = dict.fromkeys(COUNTERS, 0)
    done, seen = 0, set()
    for k, v in fields.items():
        part, sep, counter = k.partition(":")
        if not sep or not part.isdigit():
            job[k] = int(v) if k in ("partitions", "created_ms", "hybrid", "send_at") \
                and v.isdigit() else v
            continue
        seen.add(part)
        if counter == "done":
            done += int(v)
        elif counter in totals:
            totals[counter] += int(v)
    parts = job.get("partitions")
    return {**job, **totals, "partitions_reporting": len(seen), "partitions_done": done,
            "finished": isinstance(parts, int) and done >= parts}
