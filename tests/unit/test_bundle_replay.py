"""Bundles after a crash (C1): a replay re-forms bundles from the last snapshot; no member
may end up behind another bundle's sent-marker, and the same members must meet their own.

``Run`` stands for the flow around one partition: it routes batches, ticks the way the
engine does (after every batch, and at the wake time), and "sends" like the sinks: a task
whose marker exists is skipped.  The markers outlive a crash; the processor's state is
what its last snapshot held.
"""

from __future__ import annotations

import pickle

import orjson

from notiflow.topics import partition_for
from operators.bundler import bundle_id
from operators.partition import DEVICES, REQUEST, SETTINGS, PartitionProcessor, Routed
from schemas.request import decode_request
from schemas.task import DeliveryTask
from sinks.markers import marker_key

N = 4
T0 = 1_764_050_000_000
CK = "likes:photo9"
WINDOW_MS = 60_000


def user_in(p: int) -> str:
    return next(u for i in range(1000) if partition_for(u := f"b{i}", N) == p)


def like(user: str, i: int) -> tuple[int, bytes, bytes, int]:
    return (REQUEST, user.encode(), orjson.dumps({
        "id": f"like-{i}", "type": "social.like", "created_at": T0 - 100 + i,
        "recipients": [user], "body": f"a{i} liked your photo", "collapse_key": CK,
        "dedup": {"actor": f"a{i}", "object": "photo9"}, "channels": ["push"]}), 10 + i)


class Run:
    def __init__(self, user: str, markers: dict[str, DeliveryTask] | None = None) -> None:
        self.user = user
        self.proc = PartitionProcessor(0, N, bundle_windows={"social.like": WINDOW_MS / 1000})
        self.markers = markers if markers is not None else {}  # marker key -> task sent
        self.sent: list[DeliveryTask] = []  # what this run put on the wire

    def setup(self) -> None:
        u = self.user
        self.proc.process([
            (SETTINGS, u.encode(), orjson.dumps({"user_id": u}), 0),
            (DEVICES, u.encode(), orjson.dumps({"user_id": u, "token_id": "d1",
                                                "platform": "apns", "token": "ab" * 32}), 0),
        ], T0 - 1000)

    def _send(self, r: Routed) -> None:
        for t in r.push:
            k = marker_key(t)
            if k not in self.markers:
                self.markers[k] = t
                self.sent.append(t)

    def batch(self, records: list, now_ms: int) -> None:
        self._send(self.proc.process(records, now_ms))
        self._tick(now_ms)  # the engine ticks after every batch

    def _tick(self, now_ms: int) -> None:
        wake = self.proc.next_wake_ms()
        if wake is not None and wake <= now_ms:
            self._send(self.proc.tick(now_ms))

    def wait(self, now_ms: int) -> None:
        """Time passes to ``now_ms`` with no records: the engine wakes the step when due."""
        while (wake := self.proc.next_wake_ms()) is not None and wake <= now_ms:
            self._send(self.proc.tick(wake))

    def restored(self, snap: bytes) -> Run:
        """The crash: a new process from ``snap``; the markers in Redis stay."""
        again = Run(self.user, self.markers)
        again.proc.restore(pickle.loads(snap))
        return again


def members_sent(tasks: list[DeliveryTask]) -> list[str]:
    """The member ids the pushes stood for, one entry per push a member is in."""
    out: list[str] = []
    for t in tasks:
        b = (t.data or {}).get("bundle")
        out += b["ids"] if b else [t.notification_id]
    return out


def test_a_member_read_after_its_bundle_closed_is_not_lost_on_replay():
    # like-0 and like-1 are bundled and sent; like-2 arrives after that and waits in its own
    # window when the flow is killed.  The replay from a snapshot older than all three
    # re-forms ONE bundle of the three: under the old id (user, collapse key, first member)
    # it met the first bundle's marker and like-2 was never sent (with a `bundled` receipt)
    u = user_in(0)
    run = Run(u)
    run.setup()
    snap = pickle.dumps(run.proc.snapshot())
    run.batch([like(u, 0), like(u, 1)], T0)
    run.wait(T0 + WINDOW_MS)
    run.batch([like(u, 2)], T0 + WINDOW_MS + 1000)
    assert members_sent(run.sent) == ["like-0", "like-1"]  # like-2 is in its window: kill -9

    replay = run.restored(snap)
    replay.batch([like(u, 0), like(u, 1), like(u, 2)], T0 + WINDOW_MS + 5000)
    replay.wait(T0 + 3 * WINDOW_MS)
    assert "like-2" in members_sent(replay.sent)
    # the device shows one: the re-formed bundle has the same collapse key
    assert {t.collapse_key for t in run.sent + replay.sent} == {CK}


def test_a_replayed_bundle_with_the_same_members_meets_its_own_marker():
    u = user_in(0)
    run = Run(u)
    run.setup()
    run.batch([like(u, 0), like(u, 1)], T0)
    snap = pickle.dumps(run.proc.snapshot())  # the bundle of two, open
    run.wait(T0 + WINDOW_MS)
    run.batch([like(u, 2)], T0 + WINDOW_MS + 1000)
    run.wait(T0 + 2 * WINDOW_MS + 1000)
    assert sorted(members_sent(run.sent)) == ["like-0", "like-1", "like-2"]

    # the replay reads like-2 again, late: the restored bundle's window closed long ago,
    # so it is closed (same members, same id: the marker stops it) before like-2 is read;
    # like-2 alone again meets its own marker.  The old order (records first, then the
    # tick) put like-2 into the closed bundle: another set of members
    replay = run.restored(snap)
    replay.batch([like(u, 2)], T0 + 5 * WINDOW_MS)
    replay.wait(T0 + 7 * WINDOW_MS)
    assert replay.sent == []  # nothing went out twice


def test_a_batch_closes_due_bundles_before_its_records_join_one():
    u = user_in(0)
    run = Run(u)
    run.setup()
    run.batch([like(u, 0), like(u, 1)], T0)
    out = run.proc.process([like(u, 2)], T0 + WINDOW_MS + 1)  # the wake-up came late
    [push] = out.push
    assert push.data["bundle"]["ids"] == ["like-0", "like-1"]
    assert run.proc.next_wake_ms() == T0 + 2 * WINDOW_MS + 1  # like-2 opened its own


def test_a_bundle_id_names_its_members_in_any_order():
    u = user_in(0)
    k = [decode_request(like(u, i)[2]).dedup_key(u) for i in range(3)]
    assert bundle_id(u, CK, k[:2]) == bundle_id(u, CK, k[1::-1])
    assert bundle_id(u, CK, k[:2]) != bundle_id(u, CK, k)
    assert bundle_id(u, CK, k[:2]) != bundle_id(u, CK + "x", k[:2])
    assert bundle_id(u, CK, k[:2]) != bundle_id(user_in(1), CK, k[:2])
