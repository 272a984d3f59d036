"""Dedup of "what happened" with a TTL, as compact keyed state.

Keys are hashed to 64-bit ints with a *stable* hash (blake2b), never Python's ``hash()``,
which changes between processes and would break after a restore.  An insertion-ordered
dict doubles as the expiry queue, because every entry gets the same TTL.
"""

from __future__ import annotations

from hashlib import blake2b


def stable_hash(key: str) -> int:
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little")


class Dedup:
    """Remembers event keys for ``ttl_ms``; ``seen`` answers and records in one call."""

    __slots__ = ("ttl_ms", "expiry")

    def __init__(self, ttl_ms: int, expiry: dict[int, int] | None = None) -> None:
        self.ttl_ms = ttl_ms
        self.expiry: dict[int, int] = expiry if expiry is not None else {}

    def seen(self, key: str, now_ms: int) -> bool:
        """True if ``key`` was recorded less than ttl ago; otherwise record it now."""
        h = stable_hash(key)
        exp = self.expiry.get(h)
        if exp is not None and exp > now_ms:
            return True
        if exp is not None:
            del self.expiry[h]  # re-insert at the tail to keep expiry order
        self.expiry[h] = now_ms + self.ttl_ms
        return False

    def sweep(self, now_ms: int, limit: int = 10_000) -> int:
        """Drop up to ``limit`` expired entries from the head; returns how many."""
        n = 0
        exp = self.expiry
        for h in list(_head(exp, limit)):
            if exp[h] > now_ms:
                break
            del exp[h]
            n += 1
        return n

    def __len__(self) -> int:
        return len(self.expiry)


def _head(d: dict[int, int], n: int):
    for i, k in enumerate(d):
        if i >= n:
            return
        yield k
