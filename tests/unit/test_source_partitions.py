"""The user-partitioned source against a fake Kafka: requests are held until the control
partitions (settings, devices, subscriptions; never presence) were read up to where they
ended once the requests were fetched, and a start without a snapshot does not begin at the
start of the requests topic.

The fake models what the source relies on and what broke it: transaction markers and
removed (compacted) offsets take offsets but are never delivered, an open transaction is
invisible to a read_committed reader (its watermark is the last stable offset), the
position moves past markers and gaps, and a partition on a slow "broker" delivers records
one fetch later than they were written while a live watermark query already counts them
(the cached watermark is as old as the last fetch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

import sources.user_partitions as up
from operators.partition import DEVICES, PRESENCE, REQUEST, SETTINGS, SUBSCRIPTIONS

INVALID = -1001
TOPICS = {REQUEST: "r", SETTINGS: "s", DEVICES: "d", SUBSCRIPTIONS: "sub", PRESENCE: "pr"}


@dataclass
class Log:
    data: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # offset -> (value, ts)
    hw: int = 0  # next offset to assign
    low: int = 0
    open_from: int | None = None  # first offset of an open transaction
    slow: bool = False  # on a broker whose fetch answers one poll late
    stuck: bool = False  # ... or not at all
    visible: int = 0  # what a fetch can return (a slow broker: as of the last poll)

    def lso(self) -> int:
        return self.hw if self.open_from is None else self.open_from

    def append(self, value: bytes, ts: int = 0) -> int:
        off = self.hw
        self.data[off] = (value, ts)
        self.hw += 1
        if not self.slow:
            self.visible = self.hw
        return off

    def marker(self) -> None:  # a commit marker: an offset, never a record
        self.hw += 1
        if not self.slow:
            self.visible = self.hw


class Broker:
    def __init__(self) -> None:
        self.logs: dict[tuple[str, int], Log] = {}
        self.groups: dict[str, dict[tuple[str, int], int]] = {}

    def log(self, topic: str, p: int = 0) -> Log:
        return self.logs.setdefault((topic, p), Log())


class Msg:
    def __init__(self, topic: str, p: int, offset: int, value: bytes) -> None:
        self._t, self._p, self._o, self._v = topic, p, offset, value

    def error(self):
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._v

    def offset(self) -> int:
        return self._o


class FakeConsumer:
    broker: Broker  # set per test

    def __init__(self, conf: dict) -> None:
        self.group = conf["group.id"]
        self.pos: dict[tuple[str, int], int] = {}
        self.fetch: dict[tuple[str, int], int] = {}
        self.cached: dict[tuple[str, int], tuple[int, int]] = {}
        self.paused: set[tuple[str, int]] = set()
        self.order: list[tuple[str, int]] = []

    def assign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            key = (tp.topic, tp.partition)
            log = self.broker.log(*key)
            self.fetch[key] = log.low if tp.offset == OFFSET_BEGINNING else max(tp.offset,
                                                                                 log.low)
            self.pos[key] = INVALID
            self.order.append(key)

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in tps}

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in tps}

    def consume(self, n: int, timeout: float) -> list[Msg]:
        out: list[Msg] = []
        for key in self.order:
            log = self.broker.log(*key)
            self.cached[key] = (log.low, log.visible)
            if key in self.paused:
                continue
            end = min(log.visible, log.lso())
            start = self.fetch[key]
            for off in range(start, end):
                if len(out) >= n:
                    end = off
                    break
                if off in log.data:
                    out.append(Msg(key[0], key[1], off, log.data[off][0]))
            if end > start:  # past records, markers and gaps alike
                self.fetch[key] = end
                self.pos[key] = end
        for log in self.broker.logs.values():  # a slow broker's fetch answers next poll
            if not log.stuck:
                log.visible = log.hw
        return out

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.pos.get((tp.topic, tp.partition),
                                                                    INVALID)) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        key = (tp.topic, tp.partition)
        if cached:
            return self.cached.get(key, (-1001, -1001))
        log = self.broker.log(*key)
        return log.low, log.lso()  # read_committed: the last stable offset

    def committed(self, tps, timeout=None):
        g = self.broker.groups.get(self.group, {})
        return [TopicPartition(tp.topic, tp.partition, g.get((tp.topic, tp.partition), INVALID))
                for tp in tps]

    def commit(self, offsets, asynchronous=True):
        g = self.broker.groups.setdefault(self.group, {})
        for tp in offsets:
            g[(tp.topic, tp.partition)] = tp.offset

    def offsets_for_times(self, tps, timeout=None):
        out = []
        for tp in tps:
            log = self.broker.log(tp.topic, tp.partition)
            hits = [o for o, (_v, ts) in sorted(log.data.items()) if ts >= tp.offset]
            out.append(TopicPartition(tp.topic, tp.partition, hits[0] if hits else -1))
        return out

    def close(self) -> None:
        pass


@pytest.fixture
def broker(monkeypatch) -> Broker:
    b = Broker()
    FakeConsumer.broker = b
    monkeypatch.setattr(up, "Consumer", FakeConsumer)
    return b


def _source(bulk: bool = False, resume=None, **kw) -> up._UserPartition:
    topics = dict(TOPICS) if bulk else {k: TOPICS[k] for k in (REQUEST, SETTINGS, DEVICES)}
    if "fresh" not in kw and hasattr(up, "FreshStartConfig"):
        kw["fresh"] = up.FreshStartConfig("earliest")  # the order tests read everything
    return up._UserPartition("fake:9092", topics, 0, resume, 100, 0.0, None, **kw)


def _drain(src: up._UserPartition, polls: int = 5) -> list[tuple[int, bytes]]:
    out = []
    for _ in range(polls):
        for _key, batch in src.next_batch():
            out += [(kind, value) for kind, _k, value, _o in batch.records]
    return out


def _requests(recs) -> list[bytes]:
    return [v for k, v in recs if k == REQUEST]


def test_a_commit_marker_at_the_tail_of_settings_does_not_hold_requests(broker):
    broker.log("s").append(b"s0")
    broker.log("s").marker()  # the transaction's commit marker: offset 1, never delivered
    broker.log("r").append(b"r0")
    src = _source()
    recs = _drain(src)
    assert _requests(recs) == [b"r0"]
    assert recs.index((SETTINGS, b"s0")) < recs.index((REQUEST, b"r0"))
    broker.log("s").append(b"s1")
    broker.log("s").marker()
    broker.log("r").append(b"r1")
    assert _requests(_drain(src)) == [b"r1"]  # and again after the bootstrap


def test_an_open_transaction_on_devices_neither_holds_requests_nor_is_read(broker):
    d = broker.log("d")
    d.append(b"d0")
    d.open_from = d.append(b"d1-uncommitted")
    broker.log("r").append(b"r0")
    src = _source()
    recs = _drain(src)
    assert _requests(recs) == [b"r0"]
    assert (DEVICES, b"d1-uncommitted") not in recs
    d.append(b"d2-uncommitted")
    broker.log("r").append(b"r1")
    assert _requests(_drain(src)) == [b"r1"]


@pytest.mark.parametrize("gap", ["tail", "middle"])
def test_offsets_removed_by_compaction_do_not_hold_requests(broker, gap):
    s = broker.log("s")
    for i in range(6):
        s.append(b"s%d" % i)
    removed = [2, 3, 4, 5] if gap == "tail" else [1, 2, 3]
    for off in removed:
        del s.data[off]
    broker.log("r").append(b"r0")
    src = _source()
    recs = _drain(src)
    assert _requests(recs) == [b"r0"]
    assert recs.index((SETTINGS, b"s0")) < recs.index((REQUEST, b"r0"))


def test_empty_and_emptied_control_partitions_do_not_hold_requests(broker):
    broker.log("s")  # never written
    d = broker.log("d")
    for i in range(5):
        d.append(b"d%d" % i)
    d.data.clear()  # all past retention: nothing left to read
    d.low = d.hw
    broker.log("r").append(b"r0")
    assert _requests(_drain(_source())) == [b"r0"]


def test_a_settings_change_on_a_slow_broker_is_applied_before_a_later_request(broker):
    s = broker.log("s")
    s.slow = True  # settings[0]'s leader answers a fetch one poll late
    s.append(b"s0")
    broker.log("r").append(b"r-before")
    src = _source()
    assert _requests(_drain(src)) == [b"r-before"]
    s.append(b"s1-change")  # published (acknowledged) before the request below
    broker.log("r").append(b"r-after")
    recs = _drain(src)
    assert (SETTINGS, b"s1-change") in recs and (REQUEST, b"r-after") in recs
    assert recs.index((SETTINGS, b"s1-change")) < recs.index((REQUEST, b"r-after"))


def test_lagging_presence_does_not_hold_requests_on_the_bulk_lane(broker):
    pr = broker.log("pr")
    pr.slow = pr.stuck = True  # its broker answers no fetch; a live query counts p0
    pr.append(b"p0")
    for topic in ("s", "d", "sub"):
        broker.log(topic).append(b"x")
    broker.log("r").append(b"r0")
    recs = _drain(_source(bulk=True))
    assert _requests(recs) == [b"r0"]
    assert (PRESENCE, b"p0") not in recs


def test_requests_fetched_after_a_watermark_query_wait_for_the_next_one(broker):
    from sources.control_gate import ControlGate

    s = broker.log("s")
    reader = FakeConsumer({"group.id": "g"})
    reader.assign([TopicPartition("s", 0, OFFSET_BEGINNING)])
    read: dict[int, int] = {}
    gate = ControlGate(reader, reader, {SETTINGS: TopicPartition("s", 0)}, read)
    s.append(b"s0")
    assert gate.release(2) == 0  # two requests held; settings not read up to 1 yet
    assert gate.queries == 1
    s.append(b"s1")  # published after the query, maybe before the 3rd request
    reader.consume(1, 0)  # reads s0 only
    assert gate.release(3) == 2  # the query covered the first two, not the third
    assert gate.release(1) == 0  # a new query: s1 is not read yet
    reader.consume(10, 0)
    assert gate.release(1) == 1
    queries = gate.queries
    assert gate.release(0) == 0 and gate.queries == queries  # nothing held: no round trip


def test_a_fresh_start_begins_at_the_group_offsets_committed_one_snapshot_behind(broker):
    from sources.fresh_start import source_group

    r = broker.log("r")
    for i in range(10):
        r.append(b"r%d" % i, ts=1000 + i)
    broker.groups[source_group("r")] = {("r", 0): 7}
    src = _source(fresh=up.FreshStartConfig("committed", 48 * 3600))
    assert _requests(_drain(src)) == [b"r7", b"r8", b"r9"]
    first = src.snapshot()
    assert first[REQUEST] == 10
    assert broker.groups[source_group("r")][("r", 0)] == 7  # one snapshot behind
    r.append(b"r10", ts=2000)
    _drain(src)
    src.snapshot()
    assert broker.groups[source_group("r")][("r", 0)] == 10


def test_a_fresh_start_without_group_offsets_begins_at_now_minus_the_marker_ttl(broker,
                                                                               monkeypatch):
    r = broker.log("r")
    now_ms = 10_000_000
    ttl_s = 3600
    for i, age_s in enumerate([7200, 3601, 3599, 10]):
        r.append(b"r%d" % i, ts=now_ms - age_s * 1000)
    monkeypatch.setattr(up, "_now_ms", lambda: now_ms)
    src = _source(fresh=up.FreshStartConfig("committed", ttl_s))
    assert _requests(_drain(src)) == [b"r2", b"r3"]


def test_a_fresh_start_after_the_last_request_aged_out_begins_at_the_end(broker, monkeypatch):
    r = broker.log("r")
    r.append(b"old", ts=0)
    monkeypatch.setattr(up, "_now_ms", lambda: 10_000_000)
    src = _source(fresh=up.FreshStartConfig("time", 60))
    r.append(b"new", ts=10_000_000)
    assert _requests(_drain(src)) == [b"new"]


def test_earliest_and_a_snapshot_ignore_the_group(broker):
    from sources.fresh_start import source_group

    r = broker.log("r")
    for i in range(3):
        r.append(b"r%d" % i, ts=i)
    broker.groups[source_group("r")] = {("r", 0): 2}
    assert _requests(_drain(_source(fresh=up.FreshStartConfig("earliest")))) == [
        b"r0", b"r1", b"r2"]
    assert _requests(_drain(_source(resume={REQUEST: 1},
                                    fresh=up.FreshStartConfig("committed")))) == [b"r1", b"r2"]
