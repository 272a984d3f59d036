"""Devices per user are capped in the flows' state: one user's registration loop cannot
grow their row (and so the lane CPU every later update of it costs) without bound."""

from __future__ import annotations

import orjson

from dataflows.adapters import PartitionLogic
from notiflow.config import Settings
from operators.partition import DEVICES, PartitionProcessor
from operators.user_state import UserState
from schemas.device import Device

NOW = 1_764_050_000_000


def dev(token_id: str, active: bool = True, user: str = "u1") -> Device:
    return Device(user_id=user, token_id=token_id, platform="apns", token="ab" * 32,
                  active=active)


def ids(state: UserState, user: str = "u1") -> list[str]:
    return [r[0] for r in state.get(user).devices]


def test_a_new_device_over_the_cap_replaces_the_least_recently_registered():
    s = UserState(max_devices=3)
    assert [s.put_device(dev(t)) for t in ("a", "b", "c")] == [None, None, None]
    assert s.put_device(dev("a")) is None  # an update: moves to the end, evicts nothing
    assert ids(s) == ["b", "c", "a"]
    assert s.put_device(dev("d")) == "b"
    assert ids(s) == ["c", "a", "d"]
    assert s.put_device(dev("c", active=False)) is None  # retiring frees a place
    assert s.put_device(dev("e")) is None and ids(s) == ["a", "d", "e"]
    assert ids(s, "u2") == [] and s.put_device(dev("x", user="u2")) is None  # per user


def test_a_registration_loop_keeps_the_row_bounded():
    s = UserState()
    for i in range(s.max_devices):
        s.put_device(dev(f"d{i}"))
    full = len(s.rows["u1"])
    for i in range(s.max_devices, 5000):
        s.put_device(dev(f"d{i}"))
    assert len(s.rows["u1"]) <= full + 3 * s.max_devices  # longer ids, never more of them
    assert ids(s) == [f"d{i}" for i in range(5000 - s.max_devices, 5000)]


def test_the_cap_comes_from_settings_and_survives_a_restore():
    logic = PartitionLogic(Settings(partitions=1, max_devices_per_user=2), "requests", None)
    proc = logic._new(0)
    assert proc.users.max_devices == 2
    recs = [(DEVICES, f"u1:{t}".encode(), orjson.dumps(
        {"user_id": "u1", "token_id": t, "platform": "fcm", "token": "tok"}), i)
        for i, t in enumerate("abc")]
    proc.process(recs, NOW)
    assert ids(proc.users) == ["b", "c"]
    again = logic._new(0)
    again.restore(proc.snapshot())
    again.process([(DEVICES, b"u1:d", orjson.dumps(
        {"user_id": "u1", "token_id": "d", "platform": "fcm", "token": "tok"}), 9)], NOW)
    assert ids(again.users) == ["c", "d"]


def test_a_processor_without_settings_has_the_default_cap():
    assert PartitionProcessor(0, 1).users.max_devices == UserState().max_devices == 20
