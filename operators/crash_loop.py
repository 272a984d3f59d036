"""Crash-loop breaker: a record that kills the flow every time it is read gets skipped.

Where a failure was foreseen, one record's problem becomes that record's rejection
(operators/partition.py).  This is for the rest: a segfault in a library, an exception
nobody caught, memory.  A Bytewax flow that dies restarts from its last snapshot and reads
the same records again, so one such record stops its partition for good.  The breaker's
memory cannot live in that snapshot (it is what the dying run replays): it is a small
record per (lane, source partition) in a store that outlives the process (Redis).

Rules (``CrashLoop.start`` applies them when a source partition starts):

* A run *dies at* positions S (the offsets it resumed from) when it emitted records and the
  next start resumes from S again: no snapshot got past what it read.  A kill -9 or a
  deploy looks like one death; a poison record makes a row of them.
* After the second death in a row at S the run is *careful*: the records earlier runs from
  S emitted leave the source one at a time, each only after every sink confirmed the one
  before it (``Probe``), and the record in flight is stored before it leaves.
* A careful run that dies with record r in flight gives r a strike, unless it was alive
  ``blame_window_ms`` after r left (then it died of something else: a hung broker, a stall);
  a careful death with another record in flight (or none) clears the strikes.  When the
  flow has died more than ``limit`` times in a row at S (default 3: the fourth death) and
  every careful death among them had r in flight, r is *skipped*: from then on every run
  from S hands it to the rejected topic ("crashed the flow 4 times") instead of processing
  it.  Two careful deaths on one record, not one, so that kills by an operator (or a fault
  test) that happen to land in a careful run never skip a good record.
* A start from positions past the furthest the dead runs reached (a snapshot got past
  everything they read) forgets all of it.  A start from positions moved forward but not
  that far (a careful run snapshots as it goes) is the same loop, one step on.

Careful runs are slow (a round trip per record), so they stop at the furthest position the
dead runs reached; after that the run is normal again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

Positions = dict[int, int]  # record kind -> next offset to read (the source's snapshot)
RecordId = tuple[int, int]  # (kind, offset)

CAREFUL_AFTER = 2  # deaths in a row at one position before records go one at a time


def _pos(d: dict) -> Positions:
    return {int(k): int(v) for k, v in d.items()}


def _rid(s: str) -> RecordId:
    k, o = s.split(":")
    return int(k), int(o)


def _rstr(r: RecordId) -> str:
    return f"{r[0]}:{r[1]}"


@dataclass(slots=True)
class LoopState:
    """What the store keeps per (lane, partition); plain JSON-able values."""

    resume: Positions
    deaths: int = 0
    emitted: bool = False  # the current run emitted records
    high: Positions = field(default_factory=dict)  # furthest positions runs from S reached
    suspect: RecordId | None = None  # careful: the record in flight
    suspect_ms: int = 0  # when it left the source
    alive_ms: int = 0  # the careful run's last sign of life
    strikes: dict[RecordId, int] = field(default_factory=dict)
    skip: list[RecordId] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"resume": {str(k): v for k, v in self.resume.items()}, "deaths": self.deaths,
                "emitted": self.emitted, "high": {str(k): v for k, v in self.high.items()},
                "suspect": None if self.suspect is None else _rstr(self.suspect),
                "suspect_ms": self.suspect_ms, "alive_ms": self.alive_ms,
                "strikes": {_rstr(r): n for r, n in self.strikes.items()},
                "skip": [_rstr(r) for r in self.skip]}

    @classmethod
    def from_json(cls, d: dict) -> LoopState:
        return cls(resume=_pos(d["resume"]), deaths=int(d["deaths"]),
                   emitted=bool(d["emitted"]), high=_pos(d.get("high") or {}),
                   suspect=None if not d.get("suspect") else _rid(d["suspect"]),
                   suspect_ms=int(d.get("suspect_ms", 0)), alive_ms=int(d.get("alive_ms", 0)),
                   strikes={_rid(k): int(n) for k, n in (d.get("strikes") or {}).items()},
                   skip=[_rid(s) for s in d.get("skip") or []])


def reached(pos: Positions, high: Positions) -> bool:
    """Are positions ``pos`` at or past ``high`` for every topic in it?"""
    return all(pos.get(k, 0) >= o for k, o in high.items())


class LoopStore(Protocol):
    """Where a LoopState outlives the process (notiflow/crash_loop_store.py: Redis)."""

    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...


class CrashLoop:
    """The breaker of one source partition of one lane."""

    def __init__(self, store: LoopStore, limit: int = 3, blame_window_ms: int = 10_000,
                 track_ms: int = 120_000) -> None:
        self._store = store
        self.limit = limit
        self.blame_window_ms = blame_window_ms
        # how long into a run its reach (``high``) is stored: a run that lived longer has
        # snapshotted past its start, so the next start is elsewhere anyway
        self.track_ms = track_ms
        self._started_ms = 0
        self.state = LoopState(resume={})
        self.careful = False
        self.convicted: RecordId | None = None  # skipped by this start (for the log)

    # -- at start --------------------------------------------------------------------
    def start(self, resume: Positions, now_ms: int) -> None:
        """Count the death of the previous run (if it was one) and decide this run's mode."""
        self._started_ms = now_ms
        if self.limit <= 0:
            return
        d = self._store.load()
        st = LoopState.from_json(d) if d else None
        if st is None or (st.resume != resume and reached(resume, st.high)):
            st = LoopState(resume=dict(resume))
        elif st.emitted:
            st.deaths += 1
            r = st.suspect
            careful_death = st.deaths > CAREFUL_AFTER
            if r is not None and st.alive_ms - st.suspect_ms <= self.blame_window_ms:
                st.strikes = {r: st.strikes.get(r, 0) + 1}
                if (st.deaths >= max(self.limit + 1, CAREFUL_AFTER + 1)
                        and st.strikes[r] >= self._strikes_needed() and r not in st.skip):
                    st.skip.append(r)
                    self.convicted = r
            elif careful_death:
                st.strikes = {}
        st.resume = dict(resume)
        st.emitted = False
        st.suspect = None
        self.state = st
        self.careful = st.deaths >= CAREFUL_AFTER and bool(st.high)
        self._store.save(st.to_json())

    def _strikes_needed(self) -> int:
        """Careful deaths in a row on one record before it is skipped: two, or one when
        the limit leaves room for only one careful death."""
        return min(2, max(1, self.limit + 1 - CAREFUL_AFTER))

    # -- while running ---------------------------------------------------------------
    def emitting(self, upto: Positions, now_ms: int) -> None:
        """A normal batch leaves the source; ``upto`` = positions after it.  Stores the
        first emission of a run, and, once this position has seen a death, every one in the
        run's first ``track_ms`` (then ``high`` says how far a careful run must go)."""
        if self.limit <= 0:
            return
        st = self.state
        if st.emitted and (st.deaths == 0 or now_ms - self._started_ms > self.track_ms):
            return
        st.emitted = True
        if st.deaths > 0 or not st.high:
            for k, o in upto.items():
                if o > st.high.get(k, 0):
                    st.high[k] = o
        self._store.save(st.to_json())

    def in_careful_range(self, rec: RecordId) -> bool:
        """Is this record one the dead runs emitted (so it must go alone)?"""
        return self.careful and rec[1] < self.state.high.get(rec[0], 0)

    def leaving(self, rec: RecordId, now_ms: int) -> None:
        """Careful: ``rec`` leaves alone; stored first, so a death now is pinned on it."""
        st = self.state
        st.emitted = True
        st.suspect = rec
        st.suspect_ms = st.alive_ms = now_ms
        self._store.save(st.to_json())

    def alive(self, now_ms: int) -> None:
        """Careful, waiting for confirmations: a sign of life (at most once a second)."""
        st = self.state
        if now_ms - st.alive_ms >= 1000:
            st.alive_ms = now_ms
            self._store.save(st.to_json())

    def skipped(self, rec: RecordId) -> bool:
        return rec in self.state.skip

    def past_careful_range(self, emitted: Positions) -> bool:
        """Has this run handed on everything the dead runs had read?"""
        return reached(emitted, self.state.high)

    def finish_careful(self) -> None:
        """Past the furthest position the dead runs reached: normal batches again."""
        self.careful = False
        self.state.suspect = None
        self._store.save(self.state.to_json())
