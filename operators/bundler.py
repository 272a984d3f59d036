"""Collapse-key bundling: a user's notifications sharing a collapse key inside a window
become one ("John and 9 others liked your photo").

Rules (README "Quiet hours, send_at and bundling"):

- Only requests with a ``collapse_key`` whose type has a window > 0 bundle.  Windows come
  from config by type with a dotted-prefix match, the longest prefix winning
  (``{"social": 30, "social.like": 60}``: social.like 60 s, social.comment 30 s).
  Critical requests never bundle (the caller does not offer them).
- The first member opens the bundle for ``window`` seconds (trailing edge: nothing is sent
  until it closes), every member arriving before then joins, and the close sends ONE
  notification: the latest member's request with a new id, the count, the first actors
  and the member ids in ``data["bundle"]``, and the same collapse key (APNs
  apns-collapse-id / FCM collapse_key, set by the sinks from it).  A bundle of one is sent
  as that request, unchanged.
- Every member of a bundle of two or more gets a ``bundled`` receipt naming the bundle id.
- The bundle id is derived from (user, collapse key, every member's identity), so when a
  crash replays the last epoch, a bundle re-formed with the same members gets the same id
  and the sinks' sent-markers stop a second send, while a bundle re-formed with other
  members (one that arrived after the first close joins on replay) is a new notification
  and is sent: never a member lost behind another bundle's marker.  The device still
  shows one: the collapse key stays the bundle's, so the new one replaces the old.
- A batch closes the bundles that are due before its records join any (partition.py), so
  a member never joins a window that closed before it was read.

Members are kept as their encoded request bytes; a bundle lives one window.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import msgspec

from schemas.request import NotificationRequest

PAYLOAD_MEMBER_IDS = 20  # member ids carried in the payload (APNs allows 4 KB in all)
# data keys a producer may set: the actor's display name, and the verb phrase that makes
# "John and 9 others liked your photo" ("liked your photo")
ACTOR_NAME, BUNDLE_VERB = "actor_name", "bundle_verb"
_decode = msgspec.json.Decoder(NotificationRequest).decode  # members were validated on arrival


def window_for(type_: str, windows: dict[str, float]) -> float:
    """The bundling window of ``type_`` in seconds: exact type, else the longest dotted
    prefix in ``windows`` (0: no bundling)."""
    t = type_
    while True:
        w = windows.get(t)
        if w is not None:
            return w
        cut = t.rfind(".")
        if cut < 0:
            return 0
        t = t[:cut]


def bundle_id(user: str, collapse_key: str, member_keys: Iterable[bytes]) -> str:
    """The id of the bundle of ``member_keys`` (each member's identity digest, its
    ``dedup_key(user)``; in any order): the same members, the same id."""
    h = blake2b(f"{len(user)},{len(collapse_key)};{user}{collapse_key}".encode(), digest_size=16)
    for k in sorted(member_keys):  # 16 bytes each: no separator needed
        h.update(k)
    return f"bundle-{h.hexdigest()}"


def actors_phrase(names: list[str], count: int) -> str:
    """"John", "John and Ann", "John, Ann and Bo", "John and 9 others"."""
    if not names:
        return f"{count} people"
    if count <= 1:
        return names[0]
    if len(names) >= count:
        return ", ".join(names[:-1]) + f" and {names[-1]}"
    others = count - len(names)
    return ", ".join(names) + f" and {others} other{'s' if others > 1 else ''}"


@dataclass(slots=True)
class _Open:
    closes_ms: int
    members: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class Closed:
    """A closed bundle: the notification to send, the members it stands for, and the
    members whose expires_at passed inside the window (dropped, not sent)."""

    user: str
    request: NotificationRequest | None  # the combined one, the only member, or None
    members: list[NotificationRequest]  # empty unless two or more are combined
    expired: list[NotificationRequest]
    raw: list[bytes]  # the live members as they were encoded (to hold them again)


class Bundler:
    """Open bundles by (user, collapse key), closed by the clock."""

    __slots__ = ("windows", "max_actors", "_open", "_closes")

    def __init__(self, windows: dict[str, float] | None = None, max_actors: int = 3) -> None:
        self.windows = windows or {}
        self.max_actors = max_actors
        self._open: dict[tuple[str, str], _Open] = {}
        # heap of (closes_ms, user, collapse key); entries of closed bundles are skipped
        self._closes: list[tuple[int, str, str]] = []

    def __len__(self) -> int:
        return len(self._open)

    def window_ms(self, req: NotificationRequest) -> int:
        """0 when ``req`` does not bundle (no collapse key, or no window for its type)."""
        if not req.collapse_key or not self.windows:
            return 0
        return int(window_for(req.type, self.windows) * 1000)

    def add(self, user: str, req: NotificationRequest, value: bytes, window_ms: int,
            now_ms: int) -> None:
        """Join (or open) the bundle of (user, collapse key); ``value`` is ``req`` encoded."""
        ck = req.collapse_key or ""
        b = self._open.get((user, ck))
        if b is None:
            self._open[(user, ck)] = b = _Open(now_ms + window_ms)
            heapq.heappush(self._closes, (b.closes_ms, user, ck))
        b.members.append(value)

    def next_close_ms(self) -> int | None:
        heap = self._closes
        while heap and ((b := self._open.get(heap[0][1:])) is None or b.closes_ms != heap[0][0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def close_due(self, now_ms: int) -> list[Closed]:
        out = []
        heap = self._closes
        while heap and heap[0][0] <= now_ms:
            closes, user, ck = heapq.heappop(heap)
            b = self._open.get((user, ck))
            if b is not None and b.closes_ms == closes:
                del self._open[(user, ck)]
                out.append(self._close(user, ck, b.members, now_ms))
        return out

    def _close(self, user: str, ck: str, raw: list[bytes], now_ms: int) -> Closed:
        members, expired, live = [], [], []
        for v in raw:
            m = _decode(v)
            if m.expires_at is not None and m.expires_at <= now_ms:
                expired.append(m)
            else:
                members.append(m)
                live.append(v)
        if len(members) <= 1:
            return Closed(user, members[0] if members else None, [], expired, live)
        return Closed(user, self.combine(user, ck, members), members, expired, live)

    def combine(self, user: str, ck: str, members: list[NotificationRequest]) -> NotificationRequest:
        """One request standing for ``members`` (arrival order): the latest one's text and
        channels, with the count and first actors in the text and in ``data["bundle"]``."""
        last = members[-1]
        actors: dict[str, str] = {}  # actor id -> display name, first ones first
        for m in members:
            if len(actors) >= self.max_actors:
                break
            actor = m.dedup.actor if m.dedup and m.dedup.actor else ""
            name = (m.data or {}).get(ACTOR_NAME)
            name = name if isinstance(name, str) and name else actor
            if actor and actor not in actors:
                actors[actor] = name
            elif not actor and name and name not in actors.values():
                actors[f"#{len(actors)}"] = name
        distinct = len({m.dedup.actor for m in members if m.dedup and m.dedup.actor}) or len(members)
        names = list(actors.values())
        phrase = actors_phrase(names, distinct)
        verb = (last.data or {}).get(BUNDLE_VERB)
        body = f"{phrase} {verb}" if isinstance(verb, str) and verb else \
            f"{last.body or last.title or ''} (+{len(members) - 1} more)".strip()
        data: dict[str, Any] = dict(last.data or {})
        data["bundle"] = {
            "count": len(members),
            "actors": [a for a in actors if not a.startswith("#")],
            "actor_names": names,
            "ids": [m.id for m in members[:PAYLOAD_MEMBER_IDS]],
        }
        expires = [m.expires_at for m in members if m.expires_at is not None]
        producers = {m.producer for m in members}  # the bundle is in theirs if they share one
        return msgspec.structs.replace(
            last, id=bundle_id(user, ck, (m.dedup_key(user) for m in members)),
            recipients=[user], body=body, data=data, dedup=None, send_at=None, audience=None,
            created_at=members[0].created_at,
            expires_at=max(expires) if len(expires) == len(members) else None,
            producer=producers.pop() if len(producers) == 1 else "",
        )

    # -- recovery --------------------------------------------------------------------
    def snapshot(self) -> list[tuple[str, str, int, list[bytes]]]:
        return [(u, ck, b.closes_ms, list(b.members)) for (u, ck), b in self._open.items()]

    def restore(self, snap: list[tuple[str, str, int, list[bytes]]]) -> None:
        self._open = {(u, ck): _Open(closes, list(members)) for u, ck, closes, members in snap}
        self._closes = [(closes, u, ck) for u, ck, closes, _ in snap]
        heapq.heapify(self._closes)
