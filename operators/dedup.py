"""Dedup of "what happened" with a TTL, as compact keyed state.

Keys are hashed to 64-bit ints with a *stable* hash (blake2b), never Python's ``hash()``,
which changes between processes and would break after a restore.  An insertion-ordered
dict doubles as the expiry queue, because every entry gets the same TTL.
"""

from __future__ import annotations

from hashlib import blake2b
from itertools import islice

MIN_SWEEP = 10_000  # entries a sweep may look at even when the window did not grow
BACKLOG_SHARE = 8  # and 1/8 of the window on top of its growth


def stable_hash(key: str) -> int:
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little")


class Dedup:
    """Remembers event keys for ``ttl_ms``; ``seen`` answers and records in one call."""

    __slots__ = ("ttl_ms", "expiry", "_len_swept")

    def __init__(self, ttl_ms: int, expiry: dict[int, int] | None = None) -> None:
        self.ttl_ms = ttl_ms
        self.expiry: dict[int, int] = expiry if expiry is not None else {}
        self._len_swept = 0  # the size the last sweep left: growth since is what was added

    def seen(self, key: bytes | str, now_ms: int) -> bool:
        """True if ``key`` was recorded less than ttl ago; otherwise record it now.  A
        digest (schemas/identity.py) is not hashed again: its first 8 bytes are the entry."""
        h = int.from_bytes(key[:8], "little") if type(key) is bytes else stable_hash(key)
        exp = self.expiry.get(h)
        if exp is not None and exp > now_ms:
            return True
        if exp is not None:
            del self.expiry[h]  # re-insert at the tail to keep expiry order
        self.expiry[h] = now_ms + self.ttl_ms
        return False

    def sweep(self, now_ms: int) -> int:
        """Drop expired entries from the head; returns how many.

        A call looks at no more than the window grew since the last sweep plus an eighth of
        it (at least ``MIN_SWEEP``): eviction keeps up with any insert rate, so the size
        levels off at rate x TTL, and a backlog (a restore, a burst) drains in a few calls,
        while one call's work stays bounded.  A fixed cap would let the window grow
        without bound at any rate above cap/interval."""
        exp = self.expiry
        size = len(exp)
        budget = max(MIN_SWEEP, size - self._len_swept + size // BACKLOG_SHARE)
        dead = []
        for h, e in islice(exp.items(), budget):
            if e > now_ms:
                break
            dead.append(h)
        for h in dead:
            del exp[h]
        self._len_swept = len(exp)
        return len(dead)

    def __len__(self) -> int:
        return len(self.expiry)
