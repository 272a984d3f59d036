"""The sandbox's device model: notifications keyed by collapse identity, and the two
duplicate counts (transport: on the wire twice; visible: shown twice on one device)."""

from hypothesis import given
from hypothesis import strategies as st

from sandbox.devices import Devices
from sandbox.state import State


def figures(d: Devices) -> tuple[int, int, int, int]:
    f = d.figures
    return f.devices, f.shown, f.visible_duplicates, f.transport_duplicates


def test_a_resend_with_the_same_identity_replaces_itself():
    d = Devices()
    d.add("tok", "n1", "id-1")
    d.add("tok", "n1", "id-1")
    assert d.shown("tok") == ["n1"] and figures(d) == (1, 1, 0, 1)


def test_a_resend_without_identity_is_shown_twice():
    d = Devices()
    d.add("tok", "n1", None)
    d.add("tok", "n1", None)
    assert d.shown("tok") == ["n1", "n1"] and figures(d) == (1, 2, 1, 1)


def test_same_identity_other_notification_replaces_the_previous_one():
    """The product's collapse key: the latest notification replaces the older one."""
    d = Devices()
    d.add("tok", "n1", "like:9")
    d.add("tok", "n2", "like:9")
    assert d.shown("tok") == ["n2"] and figures(d) == (1, 1, 0, 0)


def test_devices_are_separate():
    d = Devices()
    d.add("phone", "n1", None)
    d.add("tablet", "n1", None)
    assert figures(d) == (2, 2, 0, 0)


def test_a_replacement_takes_a_visible_duplicate_away():
    d = Devices()
    d.add("tok", "n1", None)
    d.add("tok", "n1", "x")  # shown twice: once without identity, once as "x"
    assert figures(d)[2] == 1
    d.add("tok", "n2", "x")  # "x" now shows n2: n1 is shown once
    assert d.shown("tok") == ["n1", "n2"] and figures(d) == (1, 2, 0, 1)


msgs = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["n1", "n2", "n3", None]),
                          st.sampled_from(["i1", "i2", None])), max_size=40)


@given(msgs)
def test_incremental_figures_equal_a_recount_of_the_lists(ms):
    d = Devices()
    for target, nid, ident in ms:
        d.add(target, nid, ident)
    shown = {t: d.shown(t) for t in {m[0] for m in ms}}
    visible = sum(len(ns) - len(set(ns)) for ns in
                  ([n for n in v if n is not None] for v in shown.values()))
    seen: set = set()
    transport = 0
    for target, nid, _ in ms:
        if nid is not None:
            transport += (target, nid) in seen
            seen.add((target, nid))
    assert figures(d) == (len(shown), sum(map(len, shown.values())), visible, transport)
    a, b = d.figures_of("a"), d.figures_of("b")
    a.add(b)
    assert a == d.figures  # per-device figures add up to the whole


def test_state_folds_lazily_per_provider_and_reset_forgets():
    s = State()
    s.accept("apns", "tok", "n1", "T", "B", "c1")
    assert s.visible("apns")["transport_duplicates"] == 0
    s.accept("apns", "tok", "n1", "T", "B", "c1")  # arrives after the first read
    s.accept("fcm", "tok", "n1", "T", "B", None)
    s.accept("fcm", "tok", "n1", "T", "B", None)
    assert s.visible("apns") == {"devices": 1, "shown": 1, "visible_duplicates": 0,
                                 "transport_duplicates": 1}
    assert s.visible() == {"devices": 2, "shown": 3, "visible_duplicates": 1,
                           "transport_duplicates": 2}
    assert s.visible() == s.visible()  # a second read folds nothing twice
    s.accept("apns", "other-tok", "n1", "T", "B", None)
    s.accept("apns", "other-tok", "n1", "T", "B", None)
    assert s.visible("apns", target_prefix="other-") == {
        "devices": 1, "shown": 2, "visible_duplicates": 1, "transport_duplicates": 1}
    s.reset()
    assert s.visible() == {"devices": 0, "shown": 0, "visible_duplicates": 0,
                           "transport_duplicates": 0}
