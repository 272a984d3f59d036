"""Notifications held until a time: quiet hours ending, or a future ``send_at``.

Compact on purpose (a partition may hold a million of them overnight).  Each held item is
ONE bytes object in a dict keyed by a sequence number: a fixed header (due, expires, user
length), the user id, a one-byte reason tag and the request as its encoded bytes (never a
decoded object).  Order comes from a heap of plain ints ``due << 32 | seq``; an item that
would expire before it is due also goes in a second heap ``expires << 32 | seq`` (the
others are checked for expiry when released).  Released or moved items leave stale heap
entries that are skipped when they reach the top (lazy deletion): nothing is searched.
The snapshot is the dict as one msgpack blob (one C call, like ``UserState``).

A user's held items are also listed by user, so that a settings change (quiet hours
removed or moved) re-checks them at the next tick instead of at the old end time.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

QUIET, SEND_AT = b"q", b"s"  # why an item is held (the tag byte of its stored value)
_SEQ_BITS = 32
_SEQ_MASK = (1 << _SEQ_BITS) - 1
_HDR = struct.Struct("<qqH")  # due ms, expires ms (0: never), user id length
_H = _HDR.size
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(tuple[int, dict[int, bytes]])


@dataclass(slots=True, frozen=True)
class Held:
    """One item out of the queue: who it is for, why it was held, the request bytes."""

    user: str
    reason: bytes  # QUIET or SEND_AT
    value: bytes


def _pack(due: int, exp: int, user: bytes, reason: bytes, value: bytes) -> bytes:
    return b"".join((_HDR.pack(due, exp, len(user)), user, reason, value))


class HoldQueue:
    """Held requests by due time, with their expiry times and a per-user index."""

    __slots__ = ("_items", "_users", "_due", "_exp", "_seq", "max_items")

    def __init__(self, max_items: int = 1_000_000) -> None:
        self.max_items = max_items
        self._items: dict[int, bytes] = {}  # seq -> header + user + tag + request bytes
        self._users: dict[str, list[int]] = {}  # user -> seqs held for them
        self._due: list[int] = []  # heap of due << 32 | seq
        self._exp: list[int] = []  # heap of expires << 32 | seq (expires before due)
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.max_items

    def add(self, user: str, value: bytes, due_ms: int, reason: bytes,
            expires_ms: int = 0) -> None:
        """Hold ``value`` (encoded request) for ``user`` until ``due_ms``."""
        self._seq = seq = (self._seq + 1) & _SEQ_MASK
        while seq in self._items:  # after 4 billion adds: skip seqs still in use
            self._seq = seq = (seq + 1) & _SEQ_MASK
        self._items[seq] = _pack(due_ms, expires_ms, user.encode(), reason, value)
        self._index(user, seq, due_ms, expires_ms)

    def _index(self, user: str, seq: int, due: int, exp: int) -> None:
        seqs = self._users.get(user)
        if seqs is None:
            self._users[user] = [seq]
        else:
            seqs.append(seq)
        heapq.heappush(self._due, due << _SEQ_BITS | seq)
        if exp and exp < due:
            heapq.heappush(self._exp, exp << _SEQ_BITS | seq)

    def held_for(self, user: str) -> int:
        return len(self._users.get(user, ()))

    def recheck_user(self, user: str, now_ms: int) -> int:
        """Make every item held for ``user`` due now (their settings changed: the caller
        re-decides each one at the next tick).  Returns how many."""
        seqs = self._users.get(user)
        if not seqs:
            return 0
        items = self._items
        for seq in seqs:
            b = items[seq]
            due, exp, n = _HDR.unpack_from(b)
            if due > now_ms:
                items[seq] = _HDR.pack(now_ms, exp, n) + b[_H:]
                heapq.heappush(self._due, now_ms << _SEQ_BITS | seq)
        return len(seqs)

    def pop_due(self, now_ms: int) -> Iterator[Held]:
        """Items whose due time has come, earliest first (removed as they are yielded)."""
        heap, items = self._due, self._items
        while heap and heap[0] >> _SEQ_BITS <= now_ms:
            key = heapq.heappop(heap)
            seq = key & _SEQ_MASK
            b = items.get(seq)
            if b is None or _HDR.unpack_from(b)[0] != key >> _SEQ_BITS:
                continue  # released already, or moved to another due time
            yield self._take(seq)

    def pop_expired(self, now_ms: int) -> Iterator[Held]:
        """Items whose expires_at has passed while held (removed as they are yielded)."""
        heap = self._exp
        while heap and heap[0] >> _SEQ_BITS <= now_ms:
            seq = heapq.heappop(heap) & _SEQ_MASK
            if seq in self._items:
                yield self._take(seq)

    def next_wake_ms(self) -> int | None:
        """The earliest due time or expiry among held items (stale heap tops dropped)."""
        items = self._items
        due, exp = self._due, self._exp
        while due and ((b := items.get(due[0] & _SEQ_MASK)) is None
                       or _HDR.unpack_from(b)[0] != due[0] >> _SEQ_BITS):
            heapq.heappop(due)
        while exp and (exp[0] & _SEQ_MASK) not in items:
            heapq.heappop(exp)
        tops = [k >> _SEQ_BITS for k in due[:1] + exp[:1]]
        return min(tops) if tops else None

    def _take(self, seq: int) -> Held:
        b = self._items.pop(seq)
        n = _HDR.unpack_from(b)[2]
        user = b[_H:_H + n].decode()
        seqs = self._users[user]
        seqs.remove(seq)
        if not seqs:
            del self._users[user]
        return Held(user, b[_H + n:_H + n + 1], b[_H + n + 1:])

    # -- recovery --------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """One msgpack blob: the next seq and the dict of packed items."""
        return _enc.encode((self._seq, self._items))

    @classmethod
    def restore(cls, blob: bytes, max_items: int = 1_000_000) -> HoldQueue:
        q = cls(max_items)
        q._seq, q._items = _dec.decode(blob)
        unpack = _HDR.unpack_from
        for seq, b in q._items.items():
            due, exp, n = unpack(b)
            user = b[_H:_H + n].decode()
            seqs = q._users.get(user)
            if seqs is None:
                q._users[user] = [seq]
            else:
                seqs.append(seq)
            q._due.append(due << _SEQ_BITS | seq)
            if exp and exp < due:
                q._exp.append(exp << _SEQ_BITS | seq)
        heapq.heapify(q._due)
        heapq.heapify(q._exp)
        return q
