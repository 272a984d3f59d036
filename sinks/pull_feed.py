"""Pull-on-read fan-out in Redis: the write side (flow) and the merge into an inbox (gateway).

Hybrid fan-out pushes an audience request now only to members seen recently; everyone
else gets it from ONE stored entry per audience, merged into their inbox when they next
open the app.  Keys:

* ``nf:pull:{audience}`` ZSET, score = when the flow stored the entry (ms; its send_at if
  that is later: readers see it from then on), member = the
  in-app entry JSON + ``expires_ms``; trimmed to ``NOTIFLOW_PULL_MAX`` entries and
  ``NOTIFLOW_PULL_TTL_S``.  ``ZADD NX``: a replayed scatter keeps the first score.
* ``nf:follows:{user}`` HASH audience -> since (ms): the audiences the user follows, a
  mirror of notify.subscriptions kept by the flow (HSETNX: the first time it saw it).
  Entries stored before the user followed are not merged.  "all" is always followed.
* ``nf:pullcur:{user}``: the newest entry score merged so far.
* ``nf:fanout:{id}`` HASH: the job (audience, partitions, created_ms, ...) and, per
  partition p, ``{p}:expanded`` / ``{p}:routed_now`` / ``{p}:deferred`` / ``{p}:done`` as
  totals (HSET, so a replay after a crash rewrites, never double-counts).

The merge writes through the in-app sink's own Lua script (sinks/inapp.py), so the same
sent-marker (sinks/markers.py ``marker_key``) guards both: a member who was pushed the entry,
or merges twice at once, gets it once.  Markers live ``NOTIFLOW_SENT_MARKER_TTL_S`` (48 h)
and pull entries ``NOTIFLOW_PULL_TTL_S`` (7 d), so the merge also skips ids already in the
inbox: a member pushed the entry who opens the app after the marker expired.  The merge
re-reads the last ``GRACE_MS`` before the cursor, because entries from several flow
processes do not land in score order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import orjson
import redis
import redis.asyncio as aioredis

from operators.fanout import Progress
from schemas.identity import send_key
from schemas.task import DeliveryTask
from sinks.inapp import _SCRIPT as INAPP_SCRIPT  # same marker, inbox bound, badge, live
from sinks.inapp import INBOX, entry_id
from sinks.inapp import entry as inbox_entry
from sinks.markers import marker_key

log = logging.getLogger(__name__)

PULL = "nf:pull:"
FOLLOWS = "nf:follows:"
CURSOR = "nf:pullcur:"
FANOUT = "nf:fanout:"
SETTINGS_COPY = "nf:settings:"  # + user: settings JSON, read by the gateway (people's API)
PRESENCE_SENT = "nf:presence-sent:"
ALL = "all"
GRACE_MS = 60_000
MERGE_MAX = 200  # entries merged per read at most (an inbox holds NOTIFLOW_INBOX_MAX)


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- write side: RoutedSink ----------------------------------------------------------------

class FanoutRedis:
    """Writes what the partitions decided about fan-outs, one pipeline per sink batch."""

    def __init__(self, url: str, *, pull_max: int, pull_ttl_s: int, status_ttl_s: int,
                 wait_s: float = 120.0) -> None:
        self._r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._pull_max = pull_max
        self._pull_ttl_s = pull_ttl_s
        self._status_ttl_s = status_ttl_s
        self._wait_s = wait_s

    def write(self, pull: list[tuple[str, bytes, int]], jobs: list[tuple[str, dict[str, str]]],
              progress: list[Progress], follows: list[tuple[str, str, int]],
              settings_copy: list[tuple[str, bytes | None]] = ()) -> None:  # type: ignore[assignment]
        if not (pull or jobs or progress or follows or settings_copy):
            return
        now = _now_ms()
        p = self._r.pipeline(transaction=False)
        for audience, member, score in pull:
            key = PULL + audience
            p.zadd(key, {member: score}, nx=True)
            p.zremrangebyscore(key, "-inf", now - self._pull_ttl_s * 1000)
            p.zremrangebyrank(key, 0, -self._pull_max - 1)
            p.expire(key, self._pull_ttl_s)
        for nid, record in jobs:
            key = FANOUT + nid
            for k, v in record.items():
                p.hsetnx(key, k, v)
            p.expire(key, self._status_ttl_s)
        for nid, part, counts in progress:
            key = FANOUT + nid
            p.hset(key, mapping={f"{part}:{k}": v for k, v in counts.items()})
            p.expire(key, self._status_ttl_s)
        for user, audience, since_ms in follows:
            if since_ms:
                p.hsetnx(FOLLOWS + user, audience, since_ms)
            else:
                p.hdel(FOLLOWS + user, audience)
        for user, value in settings_copy:
            if value is None:
                p.delete(SETTINGS_COPY + user)
            else:
                p.set(SETTINGS_COPY + user, value)
        self._execute(p)

    def _execute(self, p: redis.client.Pipeline) -> None:
        """Retry for ``wait_s``, then raise: the flow restarts from its snapshot and replays
        these (every write above is idempotent), rather than lose a pull entry.  The wait is
        time, not a count of attempts: a Redis restart or failover takes seconds, and a lane
        that dies for it stops every channel until something restarts it."""
        deadline = time.monotonic() + self._wait_s
        i = 0
        while True:
            try:
                p.execute()
                return
            except redis.RedisError as e:
                if time.monotonic() >= deadline:
                    raise
                i += 1
                log.warning("fan-out writes to Redis failed (%s); retry %d", e, i)
                time.sleep(min(0.2 * 2 ** min(i - 1, 4), 2.0,
                               max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        self._r.close()


# --- read side: merge into a user's inbox --------------------------------------------------

Allow = Callable[[dict], bool]  # entry -> may this user get it (preferences)


def _reads(follows: dict[bytes, bytes], cursor: int) -> list[tuple[str, int]]:
    """(audience, lowest score to read) for each followed audience and "all".  The grace
    covers entries stored out of score order and clocks of different flow processes."""
    low = max(0, cursor - GRACE_MS)
    out = {ALL: low}
    for a, since in follows.items():
        out[a.decode()] = max(low, int(since or 0) - GRACE_MS)
    return list(out.items())


def _inbox_ids(rows: list, inbox: list[bytes]) -> set[str]:
    """Ids of the entries already in an inbox; parsed only when ``rows`` (the pull
    entries read) hold something to merge, since most inbox reads find nothing."""
    if not any(rows):
        return set()
    return {nid for raw in inbox if (nid := entry_id(raw)) is not None}


def _pick(results: Iterable[list[tuple[bytes, float]]], now_ms: int, allow: Allow | None,
          have: frozenset[str] | set[str] = frozenset()) -> tuple[list[dict], int]:
    """(entries to merge, oldest first; newest score seen); ids in ``have`` are skipped."""
    found: dict[str, tuple[float, dict]] = {}
    top = 0
    for rows in results:
        for member, score in rows:
            top = max(top, int(score))
            try:
                e = orjson.loads(member)
            except orjson.JSONDecodeError:
                continue
            exp = e.get("expires_ms") or 0
            if (exp and exp <= now_ms) or (allow is not None and not allow(e)) \
                    or str(e.get("id")) in have:
                continue
            found.setdefault(str(e.get("id")), (score, e))
    picked = sorted(found.values(), key=lambda se: se[0])[-MERGE_MAX:]
    return [e for _s, e in picked], top


def _script_args(user_id: str, entries: list[dict], inbox_max: int, marker_ttl_s: int,
                 live: str) -> list:
    items = []
    for e in entries:
        nid, typ, producer, ev = str(e["id"]), e.get("type", ""), e.get("producer", ""), e.get("dedup")
        event = (ev[0], ev[1]) if isinstance(ev, list) and len(ev) == 2 else None
        # the same send identity the router gives a member pushed this request now
        t = DeliveryTask(notification_id=nid, user_id=user_id, type=typ,
                         priority="normal", channel="inapp", provider="redis",
                         target_id="inbox", address="", title=e.get("title"),
                         body=e.get("body"), template=None, data=e.get("data"),
                         collapse_key=e.get("collapse_key"), created_ms=e.get("created_ms", 0),
                         producer=producer, key=send_key(producer, typ, event, nid, user_id,
                                                         "inapp", "inbox"))
        items.append((user_id, marker_key(t), inbox_entry(t).decode()))
    return [marker_ttl_s, inbox_max, orjson.dumps(items), live]


def merge_into_inbox(r: redis.Redis, user_id: str, *, inbox_max: int = 200,
                     marker_ttl_s: int = 48 * 3600, live: str = "user",
                     allow: Allow | None = None, now_ms: int | None = None) -> int:
    """Merge the pull-on-read entries of the audiences ``user_id`` follows into their
    inbox; returns how many were new to it."""
    now = now_ms or _now_ms()
    follows, cursor = r.hgetall(FOLLOWS + user_id), int(r.get(CURSOR + user_id) or 0)
    reads = _reads(follows, cursor)
    p = r.pipeline(transaction=False)
    for audience, low in reads:
        p.zrangebyscore(PULL + audience, low, now, withscores=True)  # later: send_at
    p.lrange(INBOX + user_id, 0, -1)
    *rows, inbox = p.execute()
    entries, top = _pick(rows, now, allow, _inbox_ids(rows, inbox))
    written = 0
    if entries:
        args = _script_args(user_id, entries, inbox_max, marker_ttl_s, live)
        res = r.register_script(INAPP_SCRIPT)(keys=[], args=args)
        written = res.count(b"1")
    if top > cursor:
        r.set(CURSOR + user_id, top)
    return written


async def merge_into_inbox_async(r: aioredis.Redis, user_id: str, *, inbox_max: int = 200,
                                 marker_ttl_s: int = 48 * 3600, live: str = "user",
                                 allow: Allow | None = None, now_ms: int | None = None) -> int:
    """``merge_into_inbox`` for the gateway's redis.asyncio client."""
    now = now_ms or _now_ms()
    follows = await r.hgetall(FOLLOWS + user_id)
    cursor = int(await r.get(CURSOR + user_id) or 0)
    reads = _reads(follows, cursor)
    p = r.pipeline(transaction=False)
    for audience, low in reads:
        p.zrangebyscore(PULL + audience, low, now, withscores=True)
    p.lrange(INBOX + user_id, 0, -1)
    *rows, inbox = await p.execute()
    entries, top = _pick(rows, now, allow, _inbox_ids(rows, inbox))
    written = 0
    if entries:
        args = _script_args(user_id, entries, inbox_max, marker_ttl_s, live)
        res = await r.register_script(INAPP_SCRIPT)(keys=[], args=args)
        written = res.count(b"1")
    if top > cursor:
        await r.set(CURSOR + user_id, top)
    return written


async def should_publish_presence(r: aioredis.Redis, user_id: str, every_s: int) -> bool:
    """At most one presence record per user per ``every_s``: True for the caller that
    should publish now."""
    return bool(await r.set(PRESENCE_SENT + user_id, b"1", nx=True, ex=max(1, every_s)))
