"""The one Bytewax adapter around engine-free logic: PartitionProcessor as batch state.

The clock is read here and passed in, so operators/ never calls ``now()``.
"""

from __future__ import annotations

import time

from bytewax.operators import StatefulBatchLogic

from notiflow.config import Settings
from operators.partition import PartitionProcessor, Record, Routed

Snap = tuple[int, tuple[bytes, dict[int, int]]]


class PartitionLogic(StatefulBatchLogic[tuple[int, list[Record]], Routed, Snap]):
    def __init__(self, cfg: Settings, lane: str, resume: Snap | None) -> None:
        self._cfg = cfg
        self._lane = lane
        self._proc: PartitionProcessor | None = None
        if resume is not None:
            p, snap = resume
            self._proc = self._new(p)
            self._proc.restore(snap)

    def _new(self, p: int) -> PartitionProcessor:
        c = self._cfg
        return PartitionProcessor(p, c.partitions, lane=self._lane,
                                  max_request_bytes=c.max_request_bytes,
                                  dedup_ttl_ms=c.dedup_ttl_s * 1000)

    def on_batch(self, values: list[tuple[int, list[Record]]]) -> tuple[list[Routed], bool]:
        now_ms = int(time.time() * 1000)
        out = []
        for p, records in values:
            if self._proc is None:
                self._proc = self._new(p)
            out.append(self._proc.process(records, now_ms))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> Snap:
        assert self._proc is not None
        return (self._proc.partition, self._proc.snapshot())


def partition_logic(cfg: Settings, lane: str):
    """Builder for ``op.stateful_batch``."""
    return lambda resume: PartitionLogic(cfg, lane, resume)
