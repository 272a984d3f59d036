"""In-app delivery to Redis: inbox list (bounded), unread badge, live pub/sub feed.

One server-side script call per batch (DESIGN.md: per-item round trips cost ~15 µs).
Inside Redis 6.2 each ``redis.call`` costs ~2 µs, so the script makes as few as it can:
an idempotent sent-marker (a replay after a crash writes nothing twice), LPUSH (LTRIM only
when the inbox is over its bound), INCR, and ONE publish per batch instead of per user.

Keys (the gateway and apps read them): ``nf:inbox:{user}`` (LIST, newest first, JSON
entries), ``nf:badge:{user}`` (unread count), ``nf:sent:{notification_id}:inapp`` (marker,
TTL).  Live feed: channel ``nf:live``, one message per batch, one line per new entry:
``{user}\t{entry json}``; the gateway subscribes once and fans out to its connected users.
The script touches many users' keys, so on Redis Cluster the batch must be split by hash
slot first (not done yet).
"""

from __future__ import annotations

import orjson
import redis

from schemas.task import DeliveryTask

INBOX = "nf:inbox:"
BADGE = "nf:badge:"
LIVE = "nf:live"

_SCRIPT = r"""
local ttl = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local out, live = {}, {}
for _, item in ipairs(cjson.decode(ARGV[3])) do
  local uid, nid, entry = item[1], item[2], item[3]
  if redis.call('SET', 'nf:sent:' .. nid .. ':inapp', '1', 'NX', 'EX', ttl) then
    local inbox = 'nf:inbox:' .. uid
    if redis.call('LPUSH', inbox, entry) > max then
      redis.call('LTRIM', inbox, 0, max - 1)
    end
    redis.call('INCR', 'nf:badge:' .. uid)
    out[#out + 1] = '1'
    live[#live + 1] = uid .. '\t' .. entry
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


class InappWriter:
    """Writes batches of in-app tasks; returns, per task, True if written, False if already there."""

    def __init__(self, url: str, inbox_max: int, marker_ttl_s: int) -> None:
        self._r = redis.Redis.from_url(url)
        self._script = self._r.register_script(_SCRIPT)
        self._max = inbox_max
        self._ttl = marker_ttl_s

    def write(self, tasks: list[DeliveryTask]) -> list[bool]:
        if not tasks:
            return []
        # one JSON argument: measured cheaper for Redis than 3 arguments per item
        blob = orjson.dumps([(t.user_id, t.notification_id, entry(t).decode()) for t in tasks])
        res = self._script(keys=[], args=[self._ttl, self._max, blob])
        return [c == 49 for c in res]  # b"1"

    def close(self) -> None:
        self._r.close()
