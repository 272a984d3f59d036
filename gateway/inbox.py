"""The in-app inbox's read side in Redis: pages with read flags, mark-read, badge.

Why a read-all watermark plus a small read set, and no change to the sink: the sink's Lua
script (sinks/inapp.py) LPUSHes each new entry at the head of ``nf:inbox:{user}`` and
INCRs ``nf:badge:{user}``, and that hot path stays as it is.  Read state lives beside it:

* ``nf:readmark:{user}``: the exact bytes of the newest entry when the user last marked
  all read.  That entry and everything after it in the list (older) is read.  Redis finds
  it with one LPOS.  Once trimming drops it, every entry left is newer, so none is read
  by the mark.
* ``nf:read:{user}``: ids marked read one by one, newer than the mark.  "All" empties it;
  ids trimmed out of the inbox are pruned when the set outgrows the list.

The badge stays right because each change runs as one script next to the sink's own:
marking an unread entry read DECRs it once (a second mark finds the id in the set and does
nothing), never below 0; "all" sets it to 0.  Unread entries the inbox trimmed away still
count in the badge until the next "mark all read" (they can no longer be marked one by one).

New entries must go on the head of the list (the sink, and pull-on-read merges).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from sinks.inapp import BADGE, INBOX

READMARK = "nf:readmark:"
READSET = "nf:read:"

# id of an entry: the sink writes {"id":"..." first; anything else is decoded
_ID_OF = r"""
local function id_of(e)
  local id = string.match(e, '^{"id":"([^"\\]*)"')
  if id then return id end
  local ok, d = pcall(cjson.decode, e)
  if ok and type(d) == 'table' and d.id ~= nil then return tostring(d.id) end
  return nil
end
"""

# KEYS inbox, readmark, readset, badge; ARGV start, limit, after-id ('' = from start)
# -> {start (-1: cursor entry gone), entries, markpos (-1: none), read ids, badge, length}
_PAGE = _ID_OF + r"""
local start, limit, after = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
if after ~= '' then
  local prev = start > 0 and redis.call('LINDEX', KEYS[1], start - 1)
  if not prev or id_of(prev) ~= after then
    -- newer entries arrived (or some were trimmed): find the cursor's entry again
    start = -1
    for i, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
      if id_of(e) == after then start = i break end
    end
  end
end
local page = {}
if start >= 0 then page = redis.call('LRANGE', KEYS[1], start, start + limit - 1) end
local markpos = -1
local mark = redis.call('GET', KEYS[2])
if mark then markpos = redis.call('LPOS', KEYS[1], mark) or -1 end
return {start, page, markpos, redis.call('SMEMBERS', KEYS[3]),
        redis.call('GET', KEYS[4]) or '0', redis.call('LLEN', KEYS[1])}
"""

# KEYS inbox, readmark, readset, badge; ARGV ids as a JSON list -> {marked, badge, missing}
_MARK_IDS = _ID_OF + r"""
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local mark = redis.call('GET', KEYS[2])
local pos, markpos = {}, #entries + 1
for i, e in ipairs(entries) do
  if mark and markpos > #entries and e == mark then markpos = i end
  local id = id_of(e)
  if id and not pos[id] then pos[id] = i end
end
local marked, missing = 0, {}
for _, id in ipairs(cjson.decode(ARGV[1])) do
  local i = pos[id]
  if not i then
    missing[#missing + 1] = id
  elseif i < markpos and redis.call('SADD', KEYS[3], id) == 1 then
    marked = marked + 1
  end
end
local badge = tonumber(redis.call('GET', KEYS[4]) or '0') or 0
if marked > 0 then
  badge = math.max(0, badge - marked)
  redis.call('SET', KEYS[4], badge)
end
-- prune ids that left the inbox (or fell under the mark) once the set outgrows it
if redis.call('SCARD', KEYS[3]) > #entries then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local i = pos[id]
    if not i or i >= markpos then redis.call('SREM', KEYS[3], id) end
  end
end
return {marked, badge, missing}
"""

# KEYS inbox, readmark, readset, badge -> unread count before
_MARK_ALL = r"""
local top = redis.call('LINDEX', KEYS[1], 0)
if top then redis.call('SET', KEYS[2], top) else redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3])
local before = tonumber(redis.call('GET', KEYS[4]) or '0') or 0
redis.call('DEL', KEYS[4])
return math.max(0, before)
"""


class BadCursor(ValueError):
    """A paging cursor this service did not hand out."""


@dataclass
class Page:
    entries: list[dict]  # inbox entries, newest first, each with "read": bool
    next_cursor: str | None
    unread: int  # the badge
    total: int  # entries in the inbox now
    gone: bool = False  # the cursor's entry was trimmed away: nothing older is left


def _keys(user_id: str) -> list[str]:
    return [INBOX + user_id, READMARK + user_id, READSET + user_id, BADGE + user_id]


def encode_cursor(offset: int, after_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([offset, after_id])).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        offset, after = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError):
        raise BadCursor("cursor: not a cursor from a previous page") from None
    if not isinstance(offset, int) or not isinstance(after, str) or offset < 1 or not after:
        raise BadCursor("cursor: not a cursor from a previous page")
    return offset, after


def _badge(raw: bytes | str | None) -> int:
    try:
        return max(0, int(raw or 0))
    except ValueError:
        return 0


class Inbox:
    """Read side of one Redis: every call is one script call (one round trip)."""

    def __init__(self, r: aioredis.Redis) -> None:
        self._r = r
        self._page = r.register_script(_PAGE)
        self._mark_ids = r.register_script(_MARK_IDS)
        self._mark_all = r.register_script(_MARK_ALL)

    async def page(self, user_id: str, limit: int, cursor: str | None = None) -> Page:
        """Up to ``limit`` entries, newest first; ``cursor`` continues a previous page and
        stays right while new entries arrive at the head."""
        offset, after = decode_cursor(cursor) if cursor else (0, "")
        start, raw, markpos, read_ids, badge, total = await self._page(
            keys=_keys(user_id), args=[offset, limit, after])
        read = {i.decode() if isinstance(i, bytes) else i for i in read_ids}
        entries = []
        for n, e in enumerate(raw):
            try:
                item = orjson.loads(e)
            except orjson.JSONDecodeError:
                continue  # not ours: never fail a whole page on one foreign entry
            if not isinstance(item, dict):
                continue
            idx = start + n
            item["read"] = (markpos >= 0 and idx >= markpos) or str(item.get("id")) in read
            entries.append(item)
        nxt = None
        if start >= 0 and raw and start + len(raw) < total:
            last = orjson.loads(raw[-1]) if raw else {}
            last_id = str(last.get("id", "")) if isinstance(last, dict) else ""
            if last_id:
                nxt = encode_cursor(start + len(raw), last_id)
        return Page(entries, nxt, _badge(badge), int(total), gone=start < 0)

    async def mark_read(self, user_id: str, ids: list[str]) -> tuple[int, int, list[str]]:
        """Mark these entries read: (newly marked, badge after, ids not in the inbox)."""
        marked, badge, missing = await self._mark_ids(keys=_keys(user_id),
                                                      args=[orjson.dumps(ids)])
        return int(marked), _badge(badge), [m.decode() if isinstance(m, bytes) else m
                                            for m in missing]

    async def mark_all_read(self, user_id: str) -> int:
        """Mark every entry read; returns how many were unread (the badge before)."""
        return int(await self._mark_all(keys=_keys(user_id)))

    async def badge(self, user_id: str) -> int:
        return _badge(await self._r.get(BADGE + user_id))
