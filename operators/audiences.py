"""Who is in an audience, and who was active lately: per-partition state for fan-out.

Subscriptions are partitioned by the SUBSCRIBER, so each partition holds the members of
every audience that live on it and a fan-out is expanded by all partitions at once, each
over its own members.  ``AudienceIndex`` is the inverted index audience key -> local
members; ``PresenceTable`` is user -> last time their app was open, in whole seconds (an
int, not a datetime: it is compared once per member of a fan-out and snapshotted whole).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

_enc = msgspec.msgpack.Encoder()
_index_dec = msgspec.msgpack.Decoder(dict[str, list[str]])
_seen_dec = msgspec.msgpack.Decoder(dict[str, int])


class AudienceIndex:
    """audience key ("followers:u42", "topic:sports") -> the set of local member user ids.

    ``subscribed`` counts each user's subscriptions, so "every user this partition knows"
    (the "all" audience) does not have to union every audience's set."""

    __slots__ = ("members", "subscribed")

    def __init__(self, members: dict[str, set[str]] | None = None) -> None:
        self.members: dict[str, set[str]] = members if members is not None else {}
        self.subscribed: dict[str, int] = {}
        for users in self.members.values():
            for u in users:
                self.subscribed[u] = self.subscribed.get(u, 0) + 1

    def add(self, user_id: str, target: str) -> bool:
        """Record "user follows target"; False if it was already there."""
        users = self.members.setdefault(target, set())
        if user_id in users:
            return False
        users.add(user_id)
        self.subscribed[user_id] = self.subscribed.get(user_id, 0) + 1
        return True

    def remove(self, user_id: str, target: str) -> bool:
        """Forget "user follows target" (an unsubscribe); False if it was not there."""
        users = self.members.get(target)
        if users is None or user_id not in users:
            return False
        users.discard(user_id)
        if not users:
            del self.members[target]
        n = self.subscribed[user_id] - 1
        if n:
            self.subscribed[user_id] = n
        else:
            del self.subscribed[user_id]
        return True

    def members_of(self, audience_key: str) -> list[str]:
        """The local members, as a list a job walks (no sort: 2.5M ids take seconds)."""
        return list(self.members.get(audience_key, ()))

    def everyone(self, known: Iterable[str]) -> list[str]:
        """The "all" audience: ``known`` users (settings/devices) plus every subscriber."""
        return list(set(known).union(self.subscribed))

    def __len__(self) -> int:
        return len(self.members)

    def snapshot(self) -> bytes:
        return _enc.encode({k: list(v) for k, v in self.members.items()})

    @classmethod
    def restore(cls, blob: bytes) -> AudienceIndex:
        return cls({k: set(v) for k, v in _index_dec.decode(blob).items()})


class PresenceTable:
    """user id -> last seen (epoch seconds); only the newest time per user is kept."""

    __slots__ = ("seen",)

    def __init__(self, seen: dict[str, int] | None = None) -> None:
        self.seen: dict[str, int] = seen if seen is not None else {}

    def saw(self, user_id: str, seen_ms: int) -> None:
        s = seen_ms // 1000
        if s > self.seen.get(user_id, 0):
            self.seen[user_id] = s

    def active_since(self, user_id: str, since_s: int) -> bool:
        return self.seen.get(user_id, 0) >= since_s

    def sweep(self, older_than_s: int) -> int:
        """Forget users not seen since ``older_than_s``: they count as inactive either way."""
        stale = [u for u, s in self.seen.items() if s < older_than_s]
        for u in stale:
            del self.seen[u]
        return len(stale)

    def __len__(self) -> int:
        return len(self.seen)

    def snapshot(self) -> bytes:
        return _enc.encode(self.seen)

    @classmethod
    def restore(cls, blob: bytes) -> PresenceTable:
        return cls(_seen_dec.decode(blob))
