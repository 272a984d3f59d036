"""PartitionProcessor: the join, validation, dedup and preference logic, with no engine."""

import orjson
import pytest

from notiflow.topics import partition_for
from operators.dedup import Dedup
from operators.partition import DEVICES, REQUEST, SETTINGS, PartitionProcessor

N = 4
NOW = 1_764_050_000_000


def user_in(p: int, prefix: str = "u") -> str:
    i = 0
    while partition_for(f"{prefix}{i}", N) != p:
        i += 1
    return f"{prefix}{i}"


def req(user: str | list[str], **kw) -> bytes:
    body = {"id": kw.pop("id", "n1"), "type": "social.like", "created_at": NOW - 10,
            "recipients": user if isinstance(user, list) else [user], "body": "hi"}
    body.update(kw)
    return orjson.dumps(body)


def settings(user: str, **kw) -> bytes:
    return orjson.dumps({"user_id": user, **kw})


def device(user: str, token_id: str = "d1", platform: str = "apns", active: bool = True) -> bytes:
    return orjson.dumps({"user_id": user, "token_id": token_id, "platform": platform,
                         "token": "ab" * 32, "active": active})


@pytest.fixture
def proc() -> PartitionProcessor:
    return PartitionProcessor(0, N)


def test_partition_routes_with_default_settings_when_user_has_none(proc):
    u = user_in(0)
    out = proc.process([(REQUEST, u.encode(), req(u, channels=["inapp", "email"]), 0)], NOW)
    assert [t.user_id for t in out.inapp] == [u]
    assert out.email == []
    assert [(r.channel, r.outcome, r.reason) for r in out.receipts] == [
        ("email", "no_target", "no email address")]


def test_partition_settings_read_first_suppress_channel_off(proc):
    u = user_in(0)
    out = proc.process([
        (SETTINGS, u.encode(), settings(u, channels={"push": False}, email="a@b.co"), 0),
        (DEVICES, u.encode(), device(u), 0),
        (REQUEST, u.encode(), req(u, channels=["push", "email"]), 0),
    ], NOW)
    assert out.push == []
    assert [t.address for t in out.email] == ["a@b.co"]
    assert [(r.channel, r.outcome, r.reason) for r in out.receipts] == [
        ("push", "suppressed", "push turned off")]


def test_partition_type_opt_out_covers_dotted_prefix(proc):
    u = user_in(0)
    out = proc.process([
        (SETTINGS, u.encode(), settings(u, opt_out_types=["social"]), 0),
        (REQUEST, u.encode(), req(u), 1),
    ], NOW)
    assert out.inapp == [] and out.push == []
    assert {r.reason for r in out.receipts} == {"opted out of social"}
    assert {r.outcome for r in out.receipts} == {"suppressed"}


def test_partition_push_fans_out_to_each_active_device(proc):
    u = user_in(0)
    out = proc.process([
        (DEVICES, b"k", device(u, "phone", "apns"), 0),
        (DEVICES, b"k", device(u, "tablet", "fcm"), 1),
        (DEVICES, b"k", device(u, "old", "fcm"), 2),
        (DEVICES, b"k", device(u, "old", "fcm", active=False), 3),
        (REQUEST, u.encode(), req(u, channels=["push"]), 0),
    ], NOW)
    assert sorted((t.target_id, t.provider) for t in out.push) == [
        ("phone", "apns"), ("tablet", "fcm")]


def test_partition_dedup_drops_repeat_of_same_event(proc):
    u = user_in(0)
    a = req(u, id="n1", channels=["inapp"], dedup={"actor": "x", "object": "photo1"})
    b = req(u, id="n2", channels=["inapp"], dedup={"actor": "x", "object": "photo1"})
    c = req(u, id="n3", channels=["inapp"], dedup={"actor": "y", "object": "photo1"})
    out = proc.process([(REQUEST, None, a, 0), (REQUEST, None, b, 1), (REQUEST, None, c, 2)], NOW)
    assert [t.notification_id for t in out.inapp] == ["n1", "n3"]
    assert [(r.notification_id, r.outcome) for r in out.receipts] == [("n2", "duplicate")]


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "payload: not valid JSON"),
    (b'{"id":"n1","type":"a.b","created_at":1,"body":"x"}', "recipients: must name at least one user id"),
    (b'{"id":"n1","type":"a.b","created_at":1,"body":"x","recipients":["u"],"channels":["fax"]}',
     "channels[0]: Invalid enum value 'fax'"),
    (b'{"id":"n1","type":7,"created_at":1,"body":"x","recipients":["u"]}',
     "type: Expected `str`, got `int`"),
    (b'{"id":"n1","type":"a.b","created_at":1,"recipients":["u"]}',
     "body: one of title, body or template is required"),
    (b"\xff\xfe\x00", "payload: not valid JSON"),
])
def test_partition_rejects_bad_request_with_reason(proc, raw, reason):
    out = proc.process([(REQUEST, b"k", raw, 41)], NOW)
    assert len(out.rejected) == 1
    key, msg = out.rejected[0]
    body = orjson.loads(msg)
    assert body["reason"].startswith(reason)
    assert body["source"] == {"topic": "requests", "partition": 0, "offset": 41}
    assert (body["payload"] or body["payload_b64"])
    assert [r.outcome for r in out.receipts] == ["rejected"]


def test_partition_rejects_oversized_payload():
    proc = PartitionProcessor(0, N, max_request_bytes=1024)
    u = user_in(0)
    out = proc.process([(REQUEST, None, req(u, body="x" * 2000), 0)], NOW)
    assert "over the 1024-byte limit" in orjson.loads(out.rejected[0][1])["reason"]


def test_partition_bad_settings_rejected_and_state_unchanged(proc):
    u = user_in(0)
    out = proc.process([(SETTINGS, u.encode(), settings(u, phone="12345"), 0)], NOW)
    assert "phone" in orjson.loads(out.rejected[0][1])["reason"]
    assert out.receipts == []  # a receipt is per notification, not per settings record
    assert u not in proc.users


def test_partition_expands_multi_recipient_request_to_each_users_partition(proc):
    users = [user_in(p) for p in range(N)]
    out = proc.process([(REQUEST, None, req(users + [users[0]]), 0)], NOW)
    assert sorted((p, k.decode()) for _, p, k, _ in out.reroute) == sorted(
        (partition_for(u, N), u) for u in users)
    for _, _, k, v in out.reroute:
        assert orjson.loads(v)["recipients"] == [k.decode()]


def test_partition_reroutes_records_of_another_partition(proc):
    u = user_in(2)
    out = proc.process([(REQUEST, None, req(u), 0), (SETTINGS, None, settings(u), 0)], NOW)
    assert [(kind, p) for kind, p, _, _ in out.reroute] == [(REQUEST, 2), (SETTINGS, 2)]
    assert out.inapp == [] and u not in proc.users


def test_partition_expired_request_gets_receipt_not_sent(proc):
    u = user_in(0)
    out = proc.process([(REQUEST, None, req(u, expires_at=NOW - 1), 0)], NOW)
    assert out.inapp == [] and [r.outcome for r in out.receipts] == ["expired"]


def test_partition_snapshot_restore_keeps_settings_devices_and_dedup(proc):
    u = user_in(0)
    proc.process([
        (SETTINGS, None, settings(u, channels={"inapp": False}), 0),
        (DEVICES, None, device(u), 0),
        (REQUEST, None, req(u, id="n1"), 0),
    ], NOW)
    again = PartitionProcessor(0, N)
    again.restore(proc.snapshot())
    out = again.process([(REQUEST, None, req(u, id="n1"), 1), (REQUEST, None, req(u, id="n2"), 2)],
                        NOW + 5)
    assert [r.outcome for r in out.receipts] == ["duplicate", "suppressed"]
    assert [t.notification_id for t in out.push] == ["n2"]


def test_partition_settings_tombstone_restores_defaults(proc):
    u = user_in(0)
    proc.process([(SETTINGS, u.encode(), settings(u, channels={"inapp": False}), 0)], NOW)
    proc.process([(SETTINGS, u.encode(), None, 1)], NOW)
    out = proc.process([(REQUEST, None, req(u), 2)], NOW)
    assert len(out.inapp) == 1


def test_dedup_allows_again_after_ttl_and_sweeps():
    d = Dedup(ttl_ms=1000)
    assert d.seen("a", 0) is False
    assert d.seen("a", 999) is True
    assert d.seen("a", 1000) is False
    d.seen("b", 1500)
    assert d.sweep(2001) == 1 and len(d) == 1


def test_partition_critical_push_without_device_escalates_to_sms(proc):
    u = user_in(0)
    out = proc.process([
        (SETTINGS, None, settings(u, phone="+15551234567"), 0),
        (REQUEST, None, req(u, id="c1", priority="critical", channels=["push"]), 0),
        (REQUEST, None, req(u, id="n1", channels=["push"]), 1),
    ], NOW)
    assert [(t.notification_id, t.address) for t in out.sms] == [("c1", "+15551234567")]
    assert [(r.notification_id, r.reason) for r in out.receipts] == [
        ("c1", "no active device; escalated to sms"), ("n1", "no active device")]


def test_partition_keeps_the_settings_read_copy_in_the_bulk_lane_only(proc):
    u = user_in(0)
    out = proc.process([(SETTINGS, u.encode(), settings(u, locale="fr"), 0)], NOW)
    [(user, value)] = out.settings_copy
    assert user == u and orjson.loads(value)["locale"] == "fr"
    assert proc.process([(SETTINGS, u.encode(), None, 1)], NOW).settings_copy == [(u, None)]
    critical = PartitionProcessor(0, N, lane="critical")
    assert critical.process([(SETTINGS, u.encode(), settings(u), 0)], NOW).settings_copy == []
