"""What a reconnecting live stream replays: inbox entries newer than Last-Event-ID."""

from __future__ import annotations

import orjson

from gateway.live import backlog_after, sse_event


def inbox(*ids: str) -> list[bytes]:
    """An inbox as LRANGE reads it: newest first."""
    return [orjson.dumps({"id": i, "title": "t"}) for i in ids]


def test_entries_newer_than_the_last_id_come_oldest_first():
    got = backlog_after(inbox("n4", "n3", "n2", "n1"), "n2")
    assert [orjson.loads(e)["id"] for e in got] == ["n3", "n4"]


def test_last_id_newest_replays_nothing_and_unknown_id_asks_for_resync():
    assert backlog_after(inbox("n2", "n1"), "n2") == []
    assert backlog_after(inbox("n2", "n1"), "n0") is None
    assert backlog_after([b"not json", *inbox("n1")], "n1") == [b"not json"]


def test_event_ids_never_break_the_sse_framing():
    assert sse_event(orjson.dumps({"id": "a\nb"})).startswith(b"event: inapp\n")
    assert sse_event(orjson.dumps({"id": "n1"})).startswith(b"id: n1\nevent: inapp\n")
