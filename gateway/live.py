"""Live in-app alerts as Server-Sent Events, fed by the in-app sink's Redis pub/sub.

Why SSE and not WebSocket: the stream is one-way (server to app), SSE rides plain HTTP
through proxies, and browsers reconnect by themselves.  Both live modes of the sink
(``NOTIFLOW_INAPP_LIVE``) are served:

* ``user``: each stream subscribes to its user's channel ``nf:live:{user}``.
* ``batch``: the sink publishes one message per batch on ``nf:live`` (lines
  ``{user}\\t{entry}``); one ``LiveHub`` per gateway process subscribes once and hands
  each line to the streams of that user (one Redis connection however many streams).

Each event is ``id: <notification id>``, ``event: inapp``, ``data: <inbox entry JSON>``.
A client that reconnects with ``Last-Event-ID`` (browsers' EventSource do) first gets the
inbox entries newer than that id, oldest first, then the live ones (none twice); if that id
is no longer in the inbox (trimmed), one ``event: resync`` tells the app to read the inbox.
Idle streams get a ``: ping`` comment every ``NOTIFLOW_SSE_HEARTBEAT_S`` so proxies keep
them open; a stream ends when the client goes away.  Live is best effort: an app that
reconnects reads the inbox for what it missed (a slow client's queue drops, never blocks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator

import anyio
import redis.asyncio as aioredis
from starlette.requests import Request

from sinks.inapp import INBOX, LIVE, entry_id

log = logging.getLogger(__name__)
BATCH_CHANNEL = LIVE.rstrip(":")  # "nf:live"
QUEUE_MAX = 256  # events a slow stream may lag behind before new ones are dropped
POLL_S = 1.0  # how often an idle stream checks whether its client is gone


class LiveSlots:
    """Open live streams of this process: at most ``total`` (each may hold a Redis
    connection), ``per_user`` for one user's token and ``per_key`` for one API key, so
    one caller cannot take every slot.  ``take`` runs before the stream's first await (no
    race past a cap); whoever took a slot gives it back however the stream ends."""

    def __init__(self, total: int, per_user: int, per_key: int) -> None:
        self.total, self.per_user, self.per_key = total, per_user, per_key
        self.open = 0
        self._by_owner: Counter[str] = Counter()

    @staticmethod
    def owner(user_id: str, key_hash: str | None) -> str:
        """Who a stream counts against: the API key that opened it, else the user."""
        return f"key:{key_hash}" if key_hash else f"user:{user_id}"

    def take(self, owner: str) -> tuple[int, str] | None:
        """Take a slot for ``owner``; or (status, reason) why not: 503 when the process is
        full (another gateway may have room), 429 when this caller holds its share."""
        if self.open >= self.total:
            return 503, (f"live: this gateway holds its cap of {self.total} open streams "
                         "(NOTIFLOW_GATEWAY_LIVE_MAX_STREAMS); retry later or on another "
                         "gateway")
        is_key = owner.startswith("key:")
        cap = self.per_key if is_key else self.per_user
        if self._by_owner[owner] >= cap:
            who, var = (("this API key", "NOTIFLOW_GATEWAY_LIVE_MAX_PER_KEY") if is_key else
                        ("this user", "NOTIFLOW_GATEWAY_LIVE_MAX_PER_USER"))
            return 429, (f"live: {who} already has {cap} open streams ({var}); close one "
                         "first")
        self.open += 1
        self._by_owner[owner] += 1
        return None

    def give(self, owner: str) -> None:
        self.open -= 1
        self._by_owner[owner] -= 1
        if self._by_owner[owner] <= 0:
            del self._by_owner[owner]  # bounded by open streams, not by callers ever seen

    def held(self, owner: str) -> int:
        return self._by_owner[owner]


def _bytes(data: bytes | str) -> bytes:
    """Pub/sub data as bytes, whether or not the client decodes responses."""
    return data.encode() if isinstance(data, str) else data


def sse_event(entry: bytes) -> bytes:
    """One SSE event for an inbox entry (JSON on one line, as the sink writes it)."""
    nid = entry_id(entry)
    head = b"event: inapp\n"
    if nid is not None and "\n" not in nid and "\r" not in nid:
        head = b"id: " + nid.encode() + b"\n" + head
    return head + b"data: " + entry.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n\n"


class LiveHub:
    """One subscription to the batch channel, fanned out to this process's streams."""

    def __init__(self, r: aioredis.Redis) -> None:
        self._r = r
        self._queues: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def subscribe(self, user_id: str) -> asyncio.Queue[bytes]:
        q: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_MAX)
        self._queues.setdefault(user_id, set()).add(q)
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="live-hub")
        waiter = asyncio.create_task(self._ready.wait())
        await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task.done():  # could not subscribe: let the stream fail with the reason
            self.unsubscribe(user_id, q)
            self._task.result()
        return q

    def unsubscribe(self, user_id: str, q: asyncio.Queue[bytes]) -> None:
        qs = self._queues.get(user_id)
        if qs is not None:
            qs.discard(q)
            if not qs:
                del self._queues[user_id]
        if not self._queues and self._task is not None:
            self._task.cancel()  # nobody listens: drop the subscription
            self._task = None

    def _dispatch(self, data: bytes) -> None:
        for line in data.split(b"\n"):
            user, tab, entry = line.partition(b"\t")
            if not tab:
                continue
            for q in self._queues.get(user.decode(errors="replace"), ()):
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(entry)

    async def _run(self) -> None:
        ps = self._r.pubsub(ignore_subscribe_messages=True)
        try:
            await ps.subscribe(BATCH_CHANNEL)
            self._ready.set()
            while True:
                msg = await ps.get_message(timeout=POLL_S)
                if msg and msg.get("type") == "message":
                    self._dispatch(_bytes(msg["data"]))
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    await ps.aclose()


async def _user_channel(r: aioredis.Redis, user_id: str) -> AsyncIterator[bytes | None]:
    """Entries on ``nf:live:{user}``; None when nothing came within POLL_S."""
    ps = r.pubsub(ignore_subscribe_messages=True)
    try:
        await ps.subscribe(LIVE + user_id)
        yield None  # subscribed: the stream may start
        while True:
            msg = await ps.get_message(timeout=POLL_S)
            yield _bytes(msg["data"]) if msg and msg.get("type") == "message" else None
    finally:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await ps.aclose()


async def _hub_queue(hub: LiveHub, user_id: str) -> AsyncIterator[bytes | None]:
    q = await hub.subscribe(user_id)
    try:
        yield None
        while True:
            try:
                yield await asyncio.wait_for(q.get(), POLL_S)
            except TimeoutError:
                yield None
    finally:
        hub.unsubscribe(user_id, q)


def hub_of(request: Request, r: aioredis.Redis) -> LiveHub:
    """The process's LiveHub, made on first use (kept on app.state)."""
    hub = getattr(request.app.state, "live_hub", None)
    if hub is None:
        hub = request.app.state.live_hub = LiveHub(r)
    return hub


def backlog_after(inbox: list[bytes], last_id: str) -> list[bytes] | None:
    """Entries newer than ``last_id`` in an inbox read newest first, oldest first; None
    when ``last_id`` is not there (trimmed away, or never this user's)."""
    for i, entry in enumerate(inbox):
        if entry_id(entry) == last_id:
            return inbox[:i][::-1]
    return None


RESYNC = (b"event: resync\ndata: {\"reason\":\"Last-Event-ID is not in the inbox any "
          b"more: read the inbox\"}\n\n")


async def open_stream(request: Request, r: aioredis.Redis, user_id: str, mode: str,
                      heartbeat_s: float, last_event_id: str | None = None
                      ) -> AsyncIterator[bytes]:
    """Subscribe now (so nothing published after this returns is missed), read what a
    reconnecting client missed, and return the SSE byte stream for StreamingResponse."""
    source = _hub_queue(hub_of(request, r), user_id) if mode == "batch" else \
        _user_channel(r, user_id)
    await anext(source)  # subscribed before the 200 goes out
    backlog: list[bytes] | None = []
    if last_event_id:
        try:
            # the whole inbox: the sink bounds it (NOTIFLOW_INBOX_MAX)
            backlog = backlog_after(await r.lrange(INBOX + user_id, 0, -1), last_event_id)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await source.aclose()
            raise
    return _sse(request, source, heartbeat_s, backlog)


async def _sse(request: Request, source: AsyncIterator[bytes | None], heartbeat_s: float,
               backlog: list[bytes] | None = None) -> AsyncIterator[bytes]:
    """``backlog`` None: the client's Last-Event-ID was not found (one resync event)."""
    try:
        yield b": live in-app alerts\nretry: 3000\n\n"
        replayed = set()
        if backlog is None:
            yield RESYNC
        else:
            for entry in backlog:
                replayed.add(entry_id(entry))
                yield sse_event(entry)
        quiet_since = time.monotonic()
        async for entry in source:
            if entry is not None:
                if replayed and entry_id(entry) in replayed:
                    continue  # published while the backlog was read: sent already
                yield sse_event(entry)
                quiet_since = time.monotonic()
            elif await request.is_disconnected():
                return
            elif time.monotonic() - quiet_since >= heartbeat_s:
                yield b": ping\n\n"
                quiet_since = time.monotonic()
    finally:
        with anyio.CancelScope(shield=True):
            await source.aclose()
