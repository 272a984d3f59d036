"""Live stream slots: a global cap per process, and a share per user and per API key."""

from __future__ import annotations

from gateway.live import LiveSlots


def test_one_user_holds_at_most_its_share_and_gets_it_back():
    slots = LiveSlots(total=10, per_user=2, per_key=3)
    alice = slots.owner("alice", None)
    assert slots.take(alice) is None and slots.take(alice) is None
    status, reason = slots.take(alice)
    assert status == 429 and "NOTIFLOW_GATEWAY_LIVE_MAX_PER_USER" in reason
    assert slots.take(slots.owner("bob", None)) is None  # others are not affected
    slots.give(alice)
    assert slots.take(alice) is None


def test_a_key_counts_for_every_user_it_reads():
    slots = LiveSlots(total=10, per_user=1, per_key=2)
    ops = [slots.owner(u, "k" * 64) for u in ("a", "b", "c")]
    assert ops[0] == ops[2]  # one key, whatever user it reads
    assert slots.take(ops[0]) is None and slots.take(ops[1]) is None
    assert slots.take(ops[2])[0] == 429
    assert slots.take(slots.owner("a", None)) is None  # the user's own share is separate


def test_the_process_cap_is_503_and_nothing_leaks():
    slots = LiveSlots(total=2, per_user=5, per_key=5)
    owners = [slots.owner(u, None) for u in ("a", "b", "c")]
    assert slots.take(owners[0]) is None and slots.take(owners[1]) is None
    assert slots.take(owners[2])[0] == 503
    for o in owners[:2]:
        slots.give(o)
    assert slots.open == 0 and all(slots.held(o) == 0 for o in owners)
