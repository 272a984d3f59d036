"""The crash-loop breaker's rules, run by hand: starts, emissions, deaths, with a dict store."""

from __future__ import annotations

import orjson

from operators.crash_loop import CrashLoop


class MemStore:
    """Outlives the CrashLoop objects, as Redis outlives the processes."""

    def __init__(self) -> None:
        self.raw: bytes | None = None

    def load(self):
        return orjson.loads(self.raw) if self.raw else None

    def save(self, state: dict) -> None:
        self.raw = orjson.dumps(state)


S = {0: 100, 1: 7}  # resume positions: requests at 100, settings at 7


def run(store: MemStore, resume=S, now=1_000, limit=3) -> CrashLoop:
    loop = CrashLoop(store, limit=limit, blame_window_ms=10_000)
    loop.start(dict(resume), now)
    return loop


def die_normally(store: MemStore, upto=None, now=1_000) -> CrashLoop:
    """A run that emitted one batch (up to ``upto``) and then died."""
    loop = run(store, now=now)
    assert not loop.careful
    loop.emitting(upto or {0: 150, 1: 7}, now)
    return loop


def test_one_death_is_not_a_loop():
    store = MemStore()
    die_normally(store)
    loop = run(store)
    assert loop.state.deaths == 1 and not loop.careful and loop.convicted is None


def test_idle_restarts_from_one_position_are_not_deaths():
    store = MemStore()
    for _ in range(5):  # started, read nothing, stopped: a deploy of an idle partition
        loop = run(store)
    assert loop.state.deaths == 0 and not loop.careful


def test_second_death_makes_the_next_run_careful_up_to_where_they_reached():
    store = MemStore()
    die_normally(store, {0: 150, 1: 7})
    die_normally(store, {0: 170, 1: 9})
    loop = run(store)
    assert loop.careful and loop.state.deaths == 2
    assert loop.in_careful_range((0, 169)) and loop.in_careful_range((1, 8))
    assert not loop.in_careful_range((0, 170))
    assert loop.convicted is None  # nobody was pinned yet


def careful_death(store: MemStore, rec, now: int) -> CrashLoop:
    """A careful run that sent ``rec`` alone and died with it in flight."""
    loop = run(store, now=now)
    assert loop.careful
    loop.leaving(rec, now)
    return loop


def test_record_in_flight_at_two_careful_deaths_is_skipped_by_every_later_run():
    store = MemStore()
    die_normally(store)
    die_normally(store)
    careful = run(store, now=5_000)
    careful.leaving((0, 100), 5_000)  # sent alone, confirmed ...
    careful.leaving((0, 101), 5_010)  # ... the next one kills the process (death 3)
    third = careful_death(store, (0, 101), 6_000)  # and again (death 4: more than 3)
    assert third.convicted is None
    loop = run(store, now=7_000)
    assert loop.state.deaths == 4 and loop.convicted == (0, 101) and loop.skipped((0, 101))
    assert not loop.skipped((0, 100))
    assert loop.careful  # the rest of the range still goes one at a time
    again = run(store, now=8_000)  # died again before a snapshot: still skipped
    assert again.skipped((0, 101))


def test_one_kill_landing_in_a_careful_run_skips_nothing():
    store = MemStore()
    die_normally(store)
    die_normally(store)
    careful_death(store, (0, 120), 5_000)  # an operator's kill -9, whatever was in flight
    careful_death(store, (0, 131), 6_000)  # and another one, elsewhere
    loop = run(store, now=7_000)
    assert loop.state.deaths == 4 and loop.convicted is None and loop.state.skip == []


def test_a_second_poison_after_the_first_is_skipped_too():
    store = MemStore()
    die_normally(store)
    die_normally(store)
    careful_death(store, (0, 101), 5_000)
    careful_death(store, (0, 101), 6_000)
    careful_death(store, (0, 140), 7_000)  # past the first, the next one kills it
    careful_death(store, (0, 140), 8_000)
    loop = run(store, now=9_000)
    assert loop.state.skip == [(0, 101), (0, 140)]


def test_limit_is_configurable_and_zero_turns_it_off():
    store = MemStore()
    for _ in range(6):
        loop = run(store, limit=0)
        loop.emitting({0: 150}, 1_000)
    assert store.raw is None and not loop.careful


def test_death_long_after_the_record_left_is_not_pinned_on_it():
    store = MemStore()
    die_normally(store)
    die_normally(store)
    careful = run(store, now=5_000)
    careful.leaving((0, 100), 5_000)
    for t in range(6_000, 30_001, 1_000):  # waited 25 s for the sinks (a hung broker), died
        careful.alive(t)
    loop = run(store, now=31_000)
    assert loop.convicted is None and not loop.skipped((0, 100))


def test_a_snapshot_past_everything_the_dead_runs_read_forgets_everything():
    store = MemStore()
    die_normally(store)  # read up to {0: 150, 1: 7}
    die_normally(store)
    careful = run(store)
    careful.leaving((0, 101), 1_000)
    loop = run(store, resume={0: 150, 1: 7})  # the careful run snapshotted past all of it
    assert loop.state.deaths == 0 and not loop.careful and loop.state.skip == []


def test_a_careful_run_that_snapshots_up_to_the_poison_is_still_the_same_loop():
    store = MemStore()
    die_normally(store)  # read up to {0: 150, 1: 7}
    die_normally(store)
    careful = run(store, now=5_000)
    for o in range(100, 131):  # one at a time; snapshots commit the first 30 of them
        careful.leaving((0, o), 5_000 + o)
    moved = {0: 130, 1: 7}
    again = run(store, resume=moved, now=6_000)  # died with 130 in flight: death 3
    assert again.state.deaths == 3 and again.careful and again.state.resume == moved
    again.leaving((0, 130), 6_000)
    loop = run(store, resume=moved, now=7_000)  # death 4, the same record in flight
    assert loop.convicted == (0, 130)


def test_careful_range_ends_where_the_dead_runs_stopped_reading():
    store = MemStore()
    die_normally(store, {0: 102, 1: 7})
    die_normally(store, {0: 102, 1: 7})
    loop = run(store)
    assert not loop.past_careful_range({0: 101, 1: 7})
    assert loop.past_careful_range({0: 102, 1: 7})  # nothing more need go alone


def test_careful_run_that_gets_past_the_range_ends_careful_mode():
    store = MemStore()
    die_normally(store, {0: 102})
    die_normally(store, {0: 102})
    loop = run(store)
    assert loop.careful
    loop.finish_careful()
    assert not loop.careful


def test_a_normal_run_tracks_its_reach_only_early_after_a_death():
    store = MemStore()
    die_normally(store, {0: 150})
    loop = run(store, now=0)  # deaths == 1: reach is stored batch by batch ...
    loop.emitting({0: 160}, 1_000)
    loop.emitting({0: 900}, 200_000)  # ... for the first two minutes only
    assert loop.state.high[0] == 160
