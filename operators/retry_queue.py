"""Tasks waiting for their retry time, as timer-driven state (one queue per partition).

A heap by due time; the engine asks ``next_due_ms`` to set its timer and calls ``due``
when it fires.  Snapshots are the encoded envelopes, so waiting retries survive restarts.

One chain per task: after a crash the retry flow restores its last snapshot and replays
the topic from there, so a task it had already released (and whose next attempt is on the
topic) is released again and would start a second chain of attempts.  Each chain is named
by the task and its deadline (set at its first failure; ``make replay-dlq`` starts a new
one), and an attempt number is admitted once per chain: the copy is dropped here.
"""

from __future__ import annotations

import heapq
from itertools import count

from schemas.retry import RetryEnvelope, decode_envelope, encode_envelope

ChainKey = tuple[str, str, str, str, int]


def chain_key(env: RetryEnvelope) -> ChainKey:
    t = env.task
    return (t.notification_id, t.user_id, t.channel, t.target_id, env.deadline_ms)


class RetryQueue:
    __slots__ = ("_heap", "_seq", "_attempts", "dropped", "_swept")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, RetryEnvelope]] = []
        self._seq = count()
        self._attempts: dict[ChainKey, int] = {}  # highest attempt admitted per chain
        self.dropped = 0  # copies of an attempt already admitted
        self._swept = 0

    def add(self, env: RetryEnvelope) -> bool:
        """Queue ``env``; False (dropped) when its chain already had this attempt."""
        if env.deadline_ms:  # 0: a manual replay, always admitted
            key = chain_key(env)
            if self._attempts.get(key, 0) >= env.task.attempt:
                self.dropped += 1
                return False
            self._attempts[key] = env.task.attempt
        heapq.heappush(self._heap, (env.due_ms, next(self._seq), env))
        return True

    def due(self, now_ms: int) -> list[RetryEnvelope]:
        out = []
        attempts = self._attempts
        while self._heap and self._heap[0][0] <= now_ms:
            env = heapq.heappop(self._heap)[2]
            if env.deadline_ms and attempts.get(chain_key(env), 0) > env.task.attempt:
                self.dropped += 1  # superseded by a later attempt of its chain
                continue
            out.append(env)
        if now_ms - self._swept > 60_000:
            self._sweep(now_ms)
        return out

    def _sweep(self, now_ms: int) -> None:
        """Forget chains past their deadline: nothing of theirs can come back but DLQ."""
        self._attempts = {k: a for k, a in self._attempts.items() if k[4] > now_ms}
        self._swept = now_ms

    def next_due_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)

    def snapshot(self) -> tuple[list[bytes], list[tuple[ChainKey, int]]]:
        return [encode_envelope(e) for _, _, e in self._heap], list(self._attempts.items())

    @classmethod
    def restore(cls, snap: tuple[list[bytes], list[tuple[ChainKey, int]]] | list[bytes]
                ) -> RetryQueue:
        q = cls()
        envs, attempts = (snap, []) if isinstance(snap, list) else snap
        q._attempts = {tuple(k): a for k, a in attempts}  # type: ignore[misc]
        for raw in envs:
            env = decode_envelope(raw)
            heapq.heappush(q._heap, (env.due_ms, next(q._seq), env))
        return q
