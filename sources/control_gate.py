"""When a user partition's requests may go: once its control partitions were read up to
where they stood after the requests were fetched.

Why the consumer's position and a watermark queried after the fetch, not "last offset read
+ 1 == the cached high watermark": that equality never holds when a control partition ends
in a transaction marker, an open transaction (a read_committed reader stops at the last
stable offset) or offsets removed by compaction, so requests were held forever; and a
watermark cached from the last fetch of another broker can be older than the request
fetch, so a settings change published before a request could be applied after it.  The
position moves past control records and gaps; a watermark queried once the requests are in
hand covers every control record published before them.

Presence is a hint (who was seen lately), not a control partition: it is never given to
the gate, so a lagging presence partition holds nothing.
"""

from __future__ import annotations

from typing import Protocol

from confluent_kafka import TopicPartition

Offsets = dict[int, int]  # record kind -> next offset


class Reader(Protocol):
    """The consumer that reads the control partitions (only its position is needed)."""

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...


class Watermarks(Protocol):
    """Answers live watermark queries: a read_committed consumer's "high" is the last
    stable offset.  A second connection in production: the reader's own has a fetch
    outstanding, and a query waits behind it (about 10 ms instead of 0.1 ms locally)."""

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]: ...


class ControlGate:
    """Decides, poll by poll, how many of the held requests (oldest first) may go.

    ``read`` is the source's own "next offset" per kind (last record handed on + 1, or the
    offset it resumed from); it stands in for the position until the consumer has one.
    """

    def __init__(self, reader: Reader, watermarks: Watermarks, tps: dict[int, TopicPartition],
                 read: Offsets, timeout_s: float = 10.0) -> None:
        self._reader = reader
        self._wm = watermarks
        self._tps = {k: TopicPartition(tp.topic, tp.partition) for k, tp in tps.items()}
        self._read = read
        self._timeout_s = timeout_s
        self._target: Offsets | None = None  # queried after the covered requests were fetched
        self._covers = 0  # how many held requests that query covers
        self.queries = 0  # watermark round trips so far (cost)

    def targets(self) -> Offsets:
        """Where each control partition ends now; an empty (or emptied) one has nothing
        to wait for."""
        out: Offsets = {}
        for k, tp in self._tps.items():
            low, high = self._wm.get_watermark_offsets(tp, timeout=self._timeout_s,
                                                       cached=False)
            self.queries += 1
            if high > low:
                out[k] = high
        return out

    def reached(self, target: Offsets) -> bool:
        """Has every control partition in ``target`` been read up to it?"""
        kinds = [k for k in target if k in self._tps]
        if not kinds:
            return True
        positions = self._reader.position([self._tps[k] for k in kinds])
        for k, tp in zip(kinds, positions, strict=True):
            pos = tp.offset if tp.error is None else -1
            if max(pos, self._read.get(k, 0)) < target[k]:
                return False
        return True

    def release(self, held: int) -> int:
        """How many of the ``held`` requests may go now.  At most one watermark query a
        call, and none while nothing is held: requests fetched after a query wait for the
        next one, since control records published after it may precede them."""
        if held <= 0:
            self._target, self._covers = None, 0
            return 0
        if self._target is None:
            self._target, self._covers = self.targets(), held
        if not self.reached(self._target):
            return 0
        n, self._target, self._covers = min(self._covers, held), None, 0
        return n
