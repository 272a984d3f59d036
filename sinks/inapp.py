"""In-app delivery to Redis: inbox list (bounded), unread badge, live pub/sub feed.

One server-side script call per ``SCRIPT_ITEMS`` of a batch (a round trip per item
would cost ~15 µs each).
Inside Redis 6.2 each ``redis.call`` costs ~2 µs, so the script makes as few as it can:
an idempotent sent-marker (a replay after a crash writes nothing twice), LPUSH (LTRIM only
when the inbox is over its bound), INCR, and the live publish.

Keys (the gateway and apps read them): ``nf:inbox:{user}`` (LIST, newest first, JSON
entries), ``nf:badge:{user}`` (unread count), ``nf:sent:{send identity}`` (marker, TTL,
named by sinks/markers.py ``marker_key``, as every channel's).  Live delivery
(``NOTIFLOW_INAPP_LIVE``): ``user`` (default) publishes each entry on
the user's channel ``nf:live:{user}``; ``batch`` publishes ONE message per batch on
``nf:live``, a line ``{user}\t{entry json}`` per entry, for a gateway that subscribes
once and fans out to its connected users (saves one Redis call per notification).
The script touches many users' keys, so on Redis Cluster the batch must be split by hash
slot first (not done yet).
"""

from __future__ import annotations

import orjson
import redis
from redis.exceptions import RedisError

from schemas.task import DeliveryTask
from sinks.markers import marker_key

INBOX = "nf:inbox:"
BADGE = "nf:badge:"
# items per script call: Redis runs a script alone (~16 us an item), so a fan-out's batch
# of 8,000 in one call held every other client (the critical lane) ~130 ms
SCRIPT_ITEMS = 1000
MAX_ENTRY_BYTES = 64 * 1024  # an inbox entry (requests are 16 KiB by default)
LIVE = "nf:live:"  # + user id; "nf:live" alone in batch mode

_SCRIPT = r"""
local ttl = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local per_user = ARGV[4] == 'user'
local out, live = {}, {}
for _, item in ipairs(cjson.decode(ARGV[3])) do
  local uid, marker, entry = item[1], item[2], item[3]
  if redis.call('SET', marker, '1', 'NX', 'EX', ttl) then
    local inbox = 'nf:inbox:' .. uid
    if redis.call('LPUSH', inbox, entry) > max then
      redis.call('LTRIM', inbox, 0, max - 1)
    end
    redis.call('INCR', 'nf:badge:' .. uid)
    out[#out + 1] = '1'
    if per_user then
      redis.call('PUBLISH', 'nf:live:' .. uid, entry)
    else
      live[#live + 1] = uid .. '\t' .. entry
    end
  else
    out[#out + 1] = '0'
  end
end
if #live > 0 then
  redis.call('PUBLISH', 'nf:live', table.concat(live, '\n'))
end
return table.concat(out)
"""


def entry(t: DeliveryTask) -> bytes:
    """The inbox entry an app reads."""
    return orjson.dumps({"id": t.notification_id, "type": t.type, "title": t.title,
                         "body": t.body, "data": t.data, "collapse_key": t.collapse_key,
                         "created_ms": t.created_ms})


def entry_id(raw: bytes) -> str | None:
    """The notification id of an inbox entry as stored (None if it is not one of ours)."""
    try:
        nid = orjson.loads(raw).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return nid if isinstance(nid, str) else None


class PartialWrite(RedisError):
    """Redis failed after some script calls of a batch had landed: ``written`` holds their
    results (for the first ``len(written)`` tasks); the rest were not written."""

    def __init__(self, written: list[bool], cause: RedisError) -> None:
        super().__init__(f"{len(written)} written, then: {cause}")
        self.written = written


class InappWriter:
    """Writes batches of in-app tasks; returns, per task, True if written, False if already there."""

    def __init__(self, url: str, inbox_max: int, marker_ttl_s: int, live: str = "user") -> None:
        # a Redis that stops answering (not closing) must not hang the sink: an error
        # makes the batch a retry; one script call takes ~16 ms per 1,000 items
        self._r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=3)
        self._script = self._r.register_script(_SCRIPT)
        self._max = inbox_max
        self._ttl = marker_ttl_s
        self._live = live

    def write(self, tasks: list[DeliveryTask], entries: list[bytes] | None = None) -> list[bool]:
        """``entries``: each task's ``entry`` when the caller built them already."""
        if not tasks:
            return []
        if entries is None:
            entries = [entry(t) for t in tasks]
        out: list[bool] = []
        for i in range(0, len(tasks), SCRIPT_ITEMS):
            part = tasks[i : i + SCRIPT_ITEMS]
            # one JSON argument: measured cheaper for Redis than 3 arguments per item
            blob = orjson.dumps([(t.user_id, marker_key(t), e.decode())
                                 for t, e in zip(part, entries[i : i + SCRIPT_ITEMS],
                                                 strict=True)])
            try:
                res = self._script(keys=[], args=[self._ttl, self._max, blob, self._live])
            except RedisError as e:
                if not out:
                    raise
                raise PartialWrite(out, e) from e  # the calls before this one did land
            out += [c == 49 for c in res]  # b"1"
        return out

    def close(self) -> None:
        self._r.close()
