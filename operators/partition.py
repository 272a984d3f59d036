"""The per-partition step: settings/devices join, validation, dedup, preferences, routing.

A source partition p emits batches of raw records from requests[p], settings[p] and
devices[p] in offset order (settings first until their high watermark, see sources/).
``PartitionProcessor`` owns the state of the users of p and turns one such batch into
one ``Routed`` result.  Working on whole batches with plain dict look-ups is the lever
that measured 4x faster than per-user keyed state (BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from operator import attrgetter

import msgspec
import orjson

from notiflow.topics import partition_for
from operators.audiences import AudienceIndex, PresenceTable
from operators.bundler import Bundler, Closed
from operators.dedup import Dedup
from operators.fanout import (
    FANOUT_KEY,
    FanoutJob,
    FanoutJobs,
    Progress,
    job_dedup_key,
    job_record,
    pull_entry,
    scatter_dedup_key,
)
from operators.hold_queue import QUIET, SEND_AT, Held, HoldQueue
from operators.quiet_hours import quiet_end_ms
from operators.rejects import rejected_key, rejection
from operators.routing import DEFAULT_ESCALATION, receipt, route
from operators.user_state import UserRow, UserState
from schemas.device import decode_device, device_key, encode_device, parse_device_key
from schemas.errors import ValidationFailed
from schemas.limits import bounded, check_user_id
from schemas.presence import decode_presence
from schemas.receipt import Outcome, Receipt
from schemas.request import (
    CHANNELS,
    CRITICAL_PRIORITY,
    NotificationRequest,
    decode_request,
    encode_request,
    is_critical,
)
from schemas.settings import decode_settings, encode_settings
from schemas.subscription import (
    decode_subscription,
    encode_subscription,
    parse_subscription_key,
    subscription_key,
)
from schemas.task import DeliveryTask

log = logging.getLogger(__name__)

REQUEST, SETTINGS, DEVICES, SUBSCRIPTIONS, PRESENCE = 0, 1, 2, 3, 4
KIND_NAMES = ("requests", "settings", "devices", "subscriptions", "presence")
ASAP = 0  # next_wake_ms: work is due now (a fan-out has members left)

# (kind, key, value, offset) as read from Kafka
Record = tuple[int, bytes | None, bytes | None, int]


@dataclass(slots=True)
class Routed:
    """Everything one batch produced, by destination."""

    push: list[DeliveryTask] = field(default_factory=list)
    email: list[DeliveryTask] = field(default_factory=list)
    sms: list[DeliveryTask] = field(default_factory=list)
    inapp: list[DeliveryTask] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    rejected: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (key, message)
    # (topic kind, partition, key, value): records that belong to another partition,
    # and the per-recipient copies of a multi-recipient request
    reroute: list[tuple[int, int, bytes, bytes | None]] = field(default_factory=list)
    # fan-out (operators/fanout.py), written to Redis by RoutedSink
    pull: list[tuple[str, bytes, int]] = field(default_factory=list)  # (audience, entry, ms)
    fanout_jobs: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (id, record)
    progress: list[Progress] = field(default_factory=list)
    # (user, audience, since ms; 0 = unfollowed): the nf:follows:{user} mirror
    follows: list[tuple[str, str, int]] = field(default_factory=list)
    # (user, settings JSON or None when deleted): the gateway's read copy nf:settings:{user},
    # kept from notify.settings so settings upstream publishes straight to Kafka show too
    settings_copy: list[tuple[str, bytes | None]] = field(default_factory=list)
    # a careful run's single record (operators/crash_loop.py): the key every sink that gets
    # work from this result confirms once it has written it
    probe: str | None = None

    def add_task(self, t: DeliveryTask) -> None:
        getattr(self, t.channel).append(t)

    def mark(self) -> tuple[int, ...]:
        """Where each list ends now: ``rollback`` drops what a failed record added."""
        return tuple(map(len, _lists(self)))

    def rollback(self, mark: tuple[int, ...]) -> None:
        for f, n in zip(_LISTS, mark, strict=True):
            del getattr(self, f)[n:]


# what a record's handler writes (tasks reach the channel lists after the loop; progress
# comes from tick only)
_LISTS = tuple(f.name for f in fields(Routed)
               if f.name not in ("probe", "progress", *CHANNELS))
_lists = attrgetter(*_LISTS)  # one C call per record on the hot path


def internal_error(e: BaseException) -> str:
    """The reason for a record that made the code raise: the rule is that it is rejected
    alone (and logged with its traceback), never that it stops the lane."""
    return bounded(f"internal error: {type(e).__name__}: {e}")


class PartitionProcessor:
    """State and logic of one user partition."""

    __slots__ = ("partition", "partitions", "lane", "max_bytes", "users", "dedup", "_swept",
                 "escalation", "audiences", "presence", "jobs", "fanout_chunk",
                 "presence_window_s", "_presence_swept", "hold", "bundler")

    def __init__(self, partition: int, partitions: int, *, lane: str = "requests",
                 max_request_bytes: int = 16 * 1024, dedup_ttl_ms: int = 3_600_000,
                 users: UserState | None = None, dedup: Dedup | None = None,
                 escalation: dict[str, list[str]] | None = None, fanout_chunk: int = 2000,
                 presence_window_s: int = 3600, hold_max: int = 1_000_000,
                 bundle_windows: dict[str, float] | None = None, bundle_actors: int = 3) -> None:
        self.partition = partition
        self.partitions = partitions
        self.lane = lane
        self.max_bytes = max_request_bytes
        self.users = users or UserState()
        self.dedup = dedup or Dedup(dedup_ttl_ms)
        self._swept = 0
        self.escalation = escalation if escalation is not None else DEFAULT_ESCALATION
        self.audiences = AudienceIndex()
        self.presence = PresenceTable()
        self.jobs = FanoutJobs()
        self.fanout_chunk = fanout_chunk
        self.presence_window_s = presence_window_s
        self._presence_swept = 0
        self.hold = HoldQueue(hold_max)
        self.bundler = Bundler(bundle_windows, bundle_actors)

    # -- the batch -------------------------------------------------------------------
    def process(self, records: list[Record], now_ms: int) -> Routed:
        out = Routed()
        tasks: list[DeliveryTask] = []
        self._close_bundles(now_ms, out, tasks)  # before any record could join a closed one
        for kind, key, value, offset in records:
            mark, ntasks = out.mark(), len(tasks)
            try:
                if kind == REQUEST:
                    self._request(key, value, offset, now_ms, out, tasks)
                elif kind == SETTINGS:
                    self._settings(key, value, offset, now_ms, out)
                elif kind == DEVICES:
                    self._device(key, value, offset, now_ms, out)
                elif kind == SUBSCRIPTIONS:
                    self._subscription(key, value, offset, now_ms, out)
                else:
                    self._presence(key, value, offset, now_ms, out)
            except Exception as e:  # one record's surprise: rejected alone, the batch goes on
                log.exception("record at %s[%d]@%s raised", KIND_NAMES[kind] if 0 <= kind < 5
                              else kind, self.partition, offset)
                out.rollback(mark)
                del tasks[ntasks:]
                self._reject(kind, key, value, offset, internal_error(e), now_ms, out)
        for t in tasks:
            out.add_task(t)
        if now_ms - self._swept > 1000:
            self.dedup.sweep(now_ms)
            self._swept = now_ms
        if now_ms - self._presence_swept > 300_000:
            self.presence.sweep(now_ms // 1000 - self.presence_window_s)
            self._presence_swept = now_ms
        return out

    # -- requests --------------------------------------------------------------------
    def _request(self, key: bytes | None, value: bytes | None, offset: int, now_ms: int,
                 out: Routed, tasks: list[DeliveryTask]) -> None:
        try:
            if value is None:
                raise ValidationFailed("payload: empty message (null value)")
            req = self._as_lane(decode_request(value, self.max_bytes))
        except ValidationFailed as e:
            self._reject(REQUEST, key, value, offset, e.reason, now_ms, out)
            return
        if req.audience is not None:
            self._fanout(req, key, value, offset, now_ms, out)
            return
        if len(req.recipients) > 1:
            self._expand(req, out)
            return
        user = req.recipients[0]
        p = partition_for(user, self.partitions)
        if p != self.partition:
            out.reroute.append((REQUEST, p, user.encode(), value))
            return
        if req.expires_at is not None and req.expires_at <= now_ms:
            out.receipts.append(receipt(req, user, "", Outcome.EXPIRED, "expired before routing", now_ms))
            return
        if self.dedup.seen(req.dedup_key(user), now_ms):
            out.receipts.append(
                receipt(req, user, "", Outcome.DUPLICATE, "same event inside the dedup window", now_ms)
            )
            return
        self._admit(req, user, value, now_ms, out, tasks)

    # -- quiet hours, send_at, bundling (README "Quiet hours, send_at and bundling") ----
    def _critical(self, req: NotificationRequest) -> bool:
        return is_critical(req.priority)

    def _as_lane(self, req: NotificationRequest) -> NotificationRequest:
        """On the critical lane every request is critical, made so where it is read: the
        tasks, retries and receipts then say so, and nothing later asks for the lane."""
        if self.lane == "critical" and not is_critical(req.priority):
            return msgspec.structs.replace(req, priority=CRITICAL_PRIORITY)
        return req

    def _hold_until(self, req: NotificationRequest, row: UserRow,
                    now_ms: int) -> tuple[int, bytes] | None:
        """(due, why) when ``req`` must wait: a future send_at (critical too: a scheduled
        reminder stays scheduled), or the user's quiet hours (never for critical)."""
        if req.send_at is not None and req.send_at > now_ms:
            return req.send_at, SEND_AT
        if self._critical(req):
            return None
        end = quiet_end_ms(row.quiet, now_ms)
        return None if end is None else (end, QUIET)

    def _admit(self, req: NotificationRequest, user: str, value: bytes, now_ms: int,
               out: Routed, tasks: list[DeliveryTask]) -> None:
        """After dedup (so a duplicate of a held request is caught on arrival): hold it,
        or deliver it now."""
        row = self.users.get(user)
        # most requests have neither: skip the calls
        wait = None if row.quiet is None and req.send_at is None else \
            self._hold_until(req, row, now_ms)
        if wait is None:
            self._deliver(req, user, value, row, now_ms, out, tasks)
        elif self.hold.full():
            out.receipts.append(receipt(
                req, user, "", Outcome.FAILED, f"not held: {len(self.hold)} notifications are "
                f"held on partition {self.partition} already (hold_max_per_partition)", now_ms))
        else:
            self.hold.add(user, value, wait[0], wait[1], req.expires_at or 0)

    def _deliver(self, req: NotificationRequest, user: str, value: bytes, row: UserRow,
                 now_ms: int, out: Routed, tasks: list[DeliveryTask]) -> None:
        """Into its bundle (collapse key + a window for its type; never critical), or
        routed now."""
        if req.collapse_key and not self._critical(req):
            window = self.bundler.window_ms(req)
            if window > 0:
                self.bundler.add(user, req, value, window, now_ms)
                return
        route(req, user, row, now_ms, tasks, out.receipts, self.escalation)

    def _release(self, h: Held, now_ms: int, out: Routed, tasks: list[DeliveryTask]) -> None:
        """A held request is due: expired -> receipt; still to wait by the user's CURRENT
        settings (or send_at) -> held again; else delivered."""
        req = self._as_lane(_decode_held(h.value))
        if req.expires_at is not None and req.expires_at <= now_ms:
            self._expired_while_held(req, h, now_ms, out)
            return
        row = self.users.get(h.user)
        wait = self._hold_until(req, row, now_ms)
        if wait is not None:
            self.hold.add(h.user, h.value, wait[0], wait[1], req.expires_at or 0)
        else:
            self._deliver(req, h.user, h.value, row, now_ms, out, tasks)

    def _expired_while_held(self, req: NotificationRequest, h: Held, now_ms: int,
                            out: Routed) -> None:
        why = "quiet hours" if h.reason == QUIET else "send_at"
        out.receipts.append(receipt(req, h.user, "", Outcome.EXPIRED,
                                    f"expired while held for {why}", now_ms))

    def _send_bundle(self, c: Closed, now_ms: int, out: Routed,
                     tasks: list[DeliveryTask]) -> None:
        """A closed bundle: one notification for all members, a ``bundled`` receipt each.
        If quiet hours began inside the window, the members are held again (and bundle
        again when released), so a bundle never wakes anyone either."""
        for m in c.expired:
            out.receipts.append(receipt(m, c.user, "", Outcome.EXPIRED,
                                        "expired inside the bundling window", now_ms))
        if c.request is None:
            return
        row = self.users.get(c.user)
        end = quiet_end_ms(row.quiet, now_ms)
        if end is not None:
            for m, raw in zip(c.members or [c.request], c.raw, strict=True):
                self.hold.add(c.user, raw, end, QUIET, m.expires_at or 0)
            return
        route(c.request, c.user, row, now_ms, tasks, out.receipts, self.escalation)
        for m in c.members:
            out.receipts.append(receipt(
                m, c.user, "", Outcome.BUNDLED,
                f"bundled into {c.request.id} with {len(c.members) - 1} others", now_ms))

    # -- audiences (operators/fanout.py says how a fan-out travels) ----------------------
    def _fanout(self, req: NotificationRequest, key: bytes | None, value: bytes, offset: int,
                now_ms: int, out: Routed) -> None:
        """An audience request: scattered to every partition once, expanded by each."""
        assert req.audience is not None
        if key == FANOUT_KEY:
            self._start_job(req, value, now_ms)
            return
        if self.lane != "requests":
            self._reject(REQUEST, key, value, offset, "audience: fan-out runs on notify.requests "
                         "only, so a broadcast never delays the critical lane", now_ms, out)
            return
        if req.expires_at is not None and req.expires_at <= now_ms:
            out.receipts.append(receipt(req, "", "", Outcome.EXPIRED, "expired before fan-out",
                                        now_ms))
            return
        if self.dedup.seen(scatter_dedup_key(req), now_ms):
            out.receipts.append(receipt(req, "", "", Outcome.DUPLICATE,
                                        "same audience request inside the dedup window", now_ms))
            return
        out.fanout_jobs.append((req.id, job_record(req, self.partitions, now_ms)))
        if req.audience.hybrid:  # readers see it from send_at on, if that is later
            out.pull.append((req.audience.key(), pull_entry(req), max(now_ms, req.send_at or 0)))
        for p in range(self.partitions):
            out.reroute.append((REQUEST, p, FANOUT_KEY, value))

    def _start_job(self, req: NotificationRequest, value: bytes, now_ms: int) -> None:
        """A scattered copy: this partition's members become a job, walked by ``tick``."""
        assert req.audience is not None
        if self.dedup.seen(job_dedup_key(req), now_ms):
            return  # this partition has (had) the job: a replayed or repeated scatter
        a = req.audience
        members = (self.audiences.everyone(self.users.rows) if a.kind == "all"
                   else self.audiences.members_of(a.key()))
        # even with no members: the job reports itself done on the next tick.  A send_at
        # holds the whole job (one entry a partition, not one per member)
        self.jobs.add(FanoutJob(req.id, value, members, a.hybrid, due_ms=req.send_at or 0))

    def _fanout_tick(self, now_ms: int, out: Routed) -> None:
        """The next ``fanout_chunk`` members: active ones (or all, hybrid=false) admitted
        like any request (quiet hours, bundling, preferences), the rest only counted: they
        read the pull-on-read entry."""
        since_s = now_ms // 1000 - self.presence_window_s
        active = self.presence.active_since
        tasks: list[DeliveryTask] = []
        for job, users in self.jobs.take(self.fanout_chunk, now_ms):
            if not self._guarded(lambda job=job, users=users: self._fanout_chunk(
                    job, users, since_s, active, now_ms, out, tasks), [job.request], now_ms,
                    out, tasks):
                if not job.stopped:
                    self.jobs.drop(job)  # it would raise again on every chunk
            out.progress.append(job.progress(self.partition))
        for t in tasks:
            out.add_task(t)

    def _fanout_chunk(self, job: FanoutJob, users: list[str], since_s: int,
                      active: Callable[[str, int], bool], now_ms: int, out: Routed,
                      tasks: list[DeliveryTask]) -> None:
        req = job.decoded()
        if req.expires_at is not None and req.expires_at <= now_ms:
            job.cursor -= len(users)
            left = self.jobs.drop(job)
            out.receipts.append(receipt(
                req, "", "", Outcome.EXPIRED, f"expired with {left} audience members not "
                f"expanded on partition {self.partition}", now_ms))
            return
        for user in users:
            if job.hybrid and not active(user, since_s):
                job.deferred += 1
                continue
            job.routed_now += 1
            self._admit(req, user, job.request, now_ms, out, tasks)

    def _expand(self, req: NotificationRequest, out: Routed) -> None:
        """A request for several users becomes one per user, each on that user's partition."""
        for user in dict.fromkeys(req.recipients):  # keep order, drop repeats
            one = msgspec.structs.replace(req, recipients=[user])
            out.reroute.append(
                (REQUEST, partition_for(user, self.partitions), user.encode(), encode_request(one))
            )

    # -- settings and devices ----------------------------------------------------------
    def _settings(self, key: bytes | None, value: bytes | None, offset: int, now_ms: int,
                  out: Routed) -> None:
        if value is None:  # tombstone: the key is the user id
            try:
                user = _user_key(key)
            except ValidationFailed as e:
                self._reject(SETTINGS, key, value, offset, e.reason, now_ms, out)
                return
            p = partition_for(user, self.partitions)
            if p != self.partition:
                out.reroute.append((SETTINGS, p, user.encode(), None))
                return
            self.users.delete_settings(user)
            self.hold.recheck_user(user, now_ms)
            if self.lane != "critical":  # one lane keeps the copy
                out.settings_copy.append((user, None))
            return
        try:
            s = decode_settings(value)
        except ValidationFailed as e:
            self._reject(SETTINGS, key, value, offset, e.reason, now_ms, out)
            return
        p = partition_for(s.user_id, self.partitions)
        if p != self.partition:
            out.reroute.append((SETTINGS, p, s.user_id.encode(), encode_settings(s)))
            return
        self.users.put_settings(s)
        self.hold.recheck_user(s.user_id, now_ms)  # quiet hours may be gone or moved
        if self.lane != "critical":
            out.settings_copy.append((s.user_id, encode_settings(s)))

    def _device(self, key: bytes | None, value: bytes | None, offset: int, now_ms: int,
                out: Routed) -> None:
        if value is None:  # tombstone, key "user:token_id"
            try:
                user, token_id = parse_device_key(key or b"")
            except ValidationFailed as e:
                self._reject(DEVICES, key, value, offset, e.reason, now_ms, out)
                return
            p = partition_for(user, self.partitions)
            if p != self.partition:
                out.reroute.append((DEVICES, p, key, None))  # type: ignore[arg-type]
                return
            self.users.delete_device(user, token_id)
            return
        try:
            d = decode_device(value)
        except ValidationFailed as e:
            self._reject(DEVICES, key, value, offset, e.reason, now_ms, out)
            return
        p = partition_for(d.user_id, self.partitions)
        if p != self.partition:
            out.reroute.append((DEVICES, p, device_key(d), encode_device(d)))
            return
        self.users.put_device(d)

    def _subscription(self, key: bytes | None, value: bytes | None, offset: int, now_ms: int,
                      out: Routed) -> None:
        if value is None:  # tombstone = unsubscribe, key "user|target"
            try:
                pair = parse_subscription_key(key or b"")
            except ValidationFailed as e:
                self._reject(SUBSCRIPTIONS, key, value, offset, e.reason, now_ms, out)
                return
            p = partition_for(pair[0], self.partitions)
            if p != self.partition:
                out.reroute.append((SUBSCRIPTIONS, p, key, None))  # type: ignore[arg-type]
                return
            self.audiences.remove(*pair)
            out.follows.append((pair[0], pair[1], 0))
            return
        try:
            s = decode_subscription(value)
            if key is not None and key != subscription_key(s.user_id, s.target):
                raise ValidationFailed("key: must be 'user_id|target' of the value, so that "
                                       "compaction and unsubscribe tombstones find it")
        except ValidationFailed as e:
            self._reject(SUBSCRIPTIONS, key, value, offset, e.reason, now_ms, out)
            return
        p = partition_for(s.user_id, self.partitions)
        if p != self.partition:
            out.reroute.append((SUBSCRIPTIONS, p, subscription_key(s.user_id, s.target),
                                encode_subscription(s)))
            return
        self.audiences.add(s.user_id, s.target)
        out.follows.append((s.user_id, s.target, now_ms))  # idempotent: Redis may lose it

    def _presence(self, key: bytes | None, value: bytes | None, offset: int, now_ms: int,
                  out: Routed) -> None:
        if value is None:
            return
        try:
            pr = decode_presence(value)
        except ValidationFailed as e:
            self._reject(PRESENCE, key, value, offset, e.reason, now_ms, out)
            return
        p = partition_for(pr.user_id, self.partitions)
        if p != self.partition:
            out.reroute.append((PRESENCE, p, pr.user_id.encode(), value))
            return
        self.presence.saw(pr.user_id, pr.seen_ms)

    def skip(self, records: list[Record], reason: str, now_ms: int) -> Routed:
        """Records the crash-loop breaker skipped: rejected unread (reading them is what
        crashed the flow)."""
        out = Routed()
        for kind, key, value, offset in records:
            self._reject(kind, key, value, offset, reason, now_ms, out)
        return out

    def _reject(self, kind: int, key: bytes | None, value: bytes | None, offset: int,
                reason: str, now_ms: int, out: Routed) -> None:
        topic = self.lane if kind == REQUEST else KIND_NAMES[kind]
        reason = bounded(reason)
        out.rejected.append((rejected_key(key),
                             rejection(reason, topic, self.partition, offset, value, now_ms)))
        if kind == REQUEST:
            nid = _best_effort_id(value)
            out.receipts.append(
                receipt(None, "", "", Outcome.REJECTED, reason, now_ms, notification_id=nid)
            )

    # -- time ------------------------------------------------------------------------
    def tick(self, now_ms: int) -> Routed:
        """Work that is due by the clock, not by a new record: held notifications whose
        quiet hours or send_at have passed, bundles whose window closed, the next chunk of a
        fan-out.  Called by the engine at ``next_wake_ms()`` and after every batch."""
        out = Routed()
        tasks: list[DeliveryTask] = []
        for h in self.hold.pop_expired(now_ms):
            self._guarded(lambda h=h: self._expired_while_held(_decode_held(h.value), h, now_ms,
                                                               out), [h.value], now_ms, out, tasks)
        for h in self.hold.pop_due(now_ms):
            self._guarded(lambda h=h: self._release(h, now_ms, out, tasks), [h.value], now_ms,
                          out, tasks)
        self._close_bundles(now_ms, out, tasks)
        for t in tasks:
            out.add_task(t)
        if self.jobs:
            self._fanout_tick(now_ms, out)
        return out

    def _close_bundles(self, now_ms: int, out: Routed, tasks: list[DeliveryTask]) -> None:
        for c in self.bundler.close_due(now_ms):
            self._guarded(lambda c=c: self._send_bundle(c, now_ms, out, tasks), c.raw, now_ms,
                          out, tasks)

    def _guarded(self, work, values: list[bytes], now_ms: int, out: Routed,
                 tasks: list[DeliveryTask]) -> bool:
        """Run one held, bundled or fan-out item's ``work``; if it raises, undo what it
        added and reject its request(s) instead (offset -1: no longer at a source offset)."""
        mark, ntasks = out.mark(), len(tasks)
        try:
            work()
            return True
        except Exception as e:
            log.exception("held/bundled/fan-out item on partition %d raised", self.partition)
            out.rollback(mark)
            del tasks[ntasks:]
            for v in values:
                self._reject(REQUEST, None, v, -1, internal_error(e), now_ms, out)
            return False

    def next_wake_ms(self) -> int | None:
        """When ``tick`` has work next (epoch ms), or None."""
        wakes = [w for w in (self.hold.next_wake_ms(), self.bundler.next_close_ms(),
                             self.jobs.next_due_ms()) if w is not None]
        return min(wakes) if wakes else None

    # -- recovery --------------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        """Plain values only (Bytewax pickles them); one entry a component."""
        return {"users": self.users.snapshot(), "dedup": dict(self.dedup.expiry),
                "audiences": self.audiences.snapshot(), "presence": self.presence.snapshot(),
                "fanout_jobs": self.jobs.snapshot(), "held": self.hold.snapshot(),
                "bundles": self.bundler.snapshot()}

    def restore(self, snap: dict[str, object]) -> None:
        self.users = UserState.restore(snap["users"], self.users.max_devices)  # type: ignore[arg-type]
        expiry: dict[int, int] = snap["dedup"]  # type: ignore[assignment]
        self.dedup.expiry = dict(sorted(expiry.items(), key=lambda kv: kv[1]))
        if "audiences" in snap:  # snapshots from before fan-out lack them
            self.audiences = AudienceIndex.restore(snap["audiences"])  # type: ignore[arg-type]
            self.presence = PresenceTable.restore(snap["presence"])  # type: ignore[arg-type]
            self.jobs = FanoutJobs.restore(snap["fanout_jobs"])  # type: ignore[arg-type]
        if "held" in snap:  # snapshots from before quiet hours lack them
            self.hold = HoldQueue.restore(snap["held"], self.hold.max_items)  # type: ignore[arg-type]
            self.bundler.restore(snap["bundles"])  # type: ignore[arg-type]


_held_decoder = msgspec.json.Decoder(NotificationRequest)


def _decode_held(value: bytes) -> NotificationRequest:
    """A held or bundled request: validated on arrival, so decoded without the checks
    (a lower max_request_bytes after a restart must not reject what was accepted)."""
    return _held_decoder.decode(value)


def _user_key(key: bytes | None) -> str:
    """The user id a tombstone's key names; ValidationFailed when it names none."""
    if not key:
        raise ValidationFailed("key: a tombstone needs the user id as its key")
    try:
        user = key.decode()
    except UnicodeDecodeError:
        raise ValidationFailed("key: not UTF-8") from None
    check_user_id("key", user)
    return user


def _best_effort_id(value: bytes | None) -> str:
    """The id of a rejected request when its JSON still says one, for the receipt."""
    if not value:
        return ""
    try:
        obj = orjson.loads(value)
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            return obj["id"][:200]
    except orjson.JSONDecodeError:
        pass
    return ""
