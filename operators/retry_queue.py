"""Tasks waiting for their retry time, as timer-driven state (one queue per partition).

A heap by due time; the engine asks ``next_due_ms`` to set its timer and calls ``due``
when it fires.  Snapshots are the encoded envelopes, so waiting retries survive restarts.
"""

from __future__ import annotations

import heapq
from itertools import count

from schemas.retry import RetryEnvelope, decode_envelope, encode_envelope


class RetryQueue:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, RetryEnvelope]] = []
        self._seq = count()

    def add(self, env: RetryEnvelope) -> None:
        heapq.heappush(self._heap, (env.due_ms, next(self._seq), env))

    def due(self, now_ms: int) -> list[RetryEnvelope]:
        out = []
        while self._heap and self._heap[0][0] <= now_ms:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def next_due_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)

    def snapshot(self) -> list[bytes]:
        return [encode_envelope(e) for _, _, e in self._heap]

    @classmethod
    def restore(cls, snap: list[bytes]) -> RetryQueue:
        q = cls()
        for raw in snap:
            q.add(decode_envelope(raw))
        return q
