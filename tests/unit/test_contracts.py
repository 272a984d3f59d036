"""Issue 9 (flow side): no single record or task can stop a lane; the contracts' limits.

Each test here failed before its fix: the poison pills A1 (a rejected record carrying the
whole payload, over the producer's message size) and A2 (``data`` nested past orjson's
depth), trailing newlines through ``re.match``, tombstones with odd keys, a record or a
task that makes the code raise.
"""

from __future__ import annotations

import hashlib
import random

import msgspec
import orjson
import pytest
from confluent_kafka import Producer

from notiflow.config import Settings
from notiflow.topics import partition_for
from operators import partition as partition_mod
from operators.backoff import BackoffPolicy
from operators.partition import (
    DEVICES,
    PRESENCE,
    REQUEST,
    SETTINGS,
    SUBSCRIPTIONS,
    PartitionProcessor,
)
from operators.rejects import EXCERPT_BYTES, rejection
from operators.retry_gate import envelope_or_rejected
from schemas.device import decode_device
from schemas.errors import ValidationFailed
from schemas.limits import MAX_DATA_DEPTH, MAX_ID_BYTES
from schemas.request import decode_request
from schemas.retry import RetryEnvelope, encode_envelope
from schemas.settings import decode_settings
from schemas.task import DeliveryTask
from sinks import apns, email_sendgrid, fcm
from sinks.channels import InappSender, escalation_id, settle
from sinks.kafka_out import produce, produce_receipts
from sinks.push_transport import HttpResp, send_checked
from sinks.results import SendResult, isolated, parse_retry_after

N = 4
NOW = 1_764_050_000_000
CFG = Settings(apns_url="http://apns.test")


def user_in(p: int, prefix: str = "u") -> str:
    i = 0
    while partition_for(f"{prefix}{i}", N) != p:
        i += 1
    return f"{prefix}{i}"


def req(user: str, **kw) -> bytes:
    body = {"id": kw.pop("id", "n1"), "type": "social.like", "created_at": NOW - 10,
            "recipients": [user], "body": "hi", "channels": ["inapp"]}
    body.update(kw)
    return msgspec.json.encode(body)  # orjson refuses what these tests send


def nested(depth: int) -> dict:
    d: dict = {"x": 1}
    for _ in range(depth - 1):
        d = {"x": d}
    return d


def task(**kw) -> DeliveryTask:
    base = dict(notification_id="n1", user_id="u1", type="social.like", priority="high",
                channel="push", provider="apns", target_id="phone", address="ab" * 32,
                title="T", body="B", template=None, data={"photo": 9}, collapse_key=None,
                created_ms=NOW)
    base.update(kw)
    return DeliveryTask(**base)


def reasons(out) -> list[str]:
    return [orjson.loads(m)["reason"] for _k, m in out.rejected]


# --- A1: the rejected record is bounded ------------------------------------------------

def test_a1_rejected_record_of_600kb_of_quotes_is_small_and_names_the_payload():
    payload = b'"' * 600_000
    u = user_in(0)
    out = PartitionProcessor(0, N).process([(REQUEST, u.encode(), payload, 7)], NOW)
    [(_key, msg)] = out.rejected
    assert len(msg) < 4 * EXCERPT_BYTES  # was 1.2 MB: over the producer's 1 MB message size
    body = orjson.loads(msg)
    assert body["payload_bytes"] == 600_000 and body["payload_truncated"] is True
    assert body["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert body["payload"] == '"' * EXCERPT_BYTES
    assert body["source"] == {"topic": "requests", "partition": 0, "offset": 7}


def test_a1_rejection_keeps_small_payloads_whole_and_binary_as_base64():
    small = orjson.loads(rejection("r", "settings", 1, 2, b'{"a": 1}', NOW))
    assert small["payload"] == '{"a": 1}' and small["payload_truncated"] is False
    binary = orjson.loads(rejection("r", "settings", 1, 2, b"\xff" * 5000, NOW))
    assert binary["payload"] is None and len(binary["payload_b64"]) <= EXCERPT_BYTES * 4 // 3 + 4
    assert binary["payload_bytes"] == 5000


def test_a1_rejected_reason_and_key_are_bounded_too():
    u = user_in(0)
    phone = "+1" + "5" * 500_000
    out = PartitionProcessor(0, N).process(
        [(SETTINGS, b"k" * 100_000, orjson.dumps({"user_id": u, "phone": phone})[:16_000], 1)],
        NOW)
    [(key, msg)] = out.rejected
    assert len(key) <= 1024 and len(msg) < 4 * EXCERPT_BYTES


def test_a1_one_record_over_the_message_size_is_logged_not_raised():
    """librdkafka refuses it in produce(), before any broker: it raised out of write_batch."""
    prod = Producer({"bootstrap.servers": "127.0.0.1:1", "message.max.bytes": 100_000})
    assert produce(prod, "t", b"k", b"x" * 200_000) is False
    assert produce(prod, "t", b"k", b"small") is True
    prod.purge()


def test_a1_one_receipt_row_over_the_message_size_is_cut_not_raised(monkeypatch):
    from schemas.receipt import Receipt
    from sinks import kafka_out

    sent: list[bytes] = []
    monkeypatch.setattr(kafka_out, "_produce", lambda _p, _t, _k, v, _part=None: sent.append(v))
    row = Receipt("n1", "u1", "t", "normal", "push", "apns", "d", "failed", "x" * 2_000_000,
                  NOW, NOW)
    produce_receipts(None, "r", [row, row])  # type: ignore[arg-type]
    assert len(sent) == 2 and all(len(b) < 10_000 for b in sent)


# --- A2: data nested deep --------------------------------------------------------------

def test_a2_deep_data_is_rejected_with_the_field_at_decode():
    u = user_in(0)
    with pytest.raises(ValidationFailed) as e:
        decode_request(req(u, data=nested(300)))
    assert e.value.reason.startswith("data.x.x") and "nested over" in e.value.reason
    decode_request(req(u, data=nested(MAX_DATA_DEPTH)))  # the limit itself is fine
    out = PartitionProcessor(0, N).process([(REQUEST, u.encode(), req(u, data=nested(300)), 0)],
                                           NOW)
    assert out.inapp == [] and "nested over" in reasons(out)[0]


def test_a2_a_task_with_deep_data_fails_alone_in_the_inapp_sink():
    """entry()'s orjson raised out of the sink: the flow exited."""
    sender = InappSender(Settings(redis_url="redis://127.0.0.1:1"))
    [r] = sender.send([task(channel="inapp", provider="redis", target_id="inbox", address="",
                            data=nested(300))])
    assert r.status == "failed" and "Recursion limit" in r.reason


@pytest.mark.parametrize("mod", [apns, fcm])
def test_a2_a_push_task_with_deep_data_fails_alone(mod):
    class Ok:
        def send(self, reqs):
            return [HttpResp(200, {}, b"{}") for _ in reqs]

    tasks = [task(provider=mod.__name__.rsplit(".", 1)[1], data=nested(300)), task()]
    out = send_checked(Ok(), tasks, lambda t: mod.build_request(t, CFG), mod.classify,
                       mod.check)
    assert out[0].status == "failed" and "payload" in out[0].reason
    assert out[1].status == "sent"


def test_a2_a_sendgrid_task_whose_data_cannot_be_encoded_fails_alone():
    class Client:
        def send(self, mail):
            class R:
                status_code, headers, body = 202, {}, b""
            return R()

    bad = task(channel="email", provider="sendgrid", target_id="email", address="a@b.co",
               data={"n": 2**70})
    good = task(channel="email", provider="sendgrid", target_id="email", address="c@d.co",
                notification_id="n2")
    out = email_sendgrid.send(Client(), [bad, good], CFG)  # type: ignore[arg-type]
    assert [r.status for r in out] == ["failed", "sent"]


# --- 3: limits and fullmatch -----------------------------------------------------------

@pytest.mark.parametrize(("fields", "reason"), [
    ({"type": "marketing.weekly\n"}, "type: 'marketing.weekly\\n' is not"),
    ({"recipients": ["x\nvictim"]}, "recipients[0]: 'x\\nvictim' is not a user id"),
    ({"recipients": ["a:b"]}, "recipients[0]: 'a:b' is not a user id"),
    ({"id": "n\n1"}, "id: 'n\\n1' contains control characters"),
    ({"id": "n" * (MAX_ID_BYTES + 1)}, "id: 201 bytes is over"),
    ({"title": "t" * 2000}, "title: 2000 bytes is over"),
    ({"data": {"n": 2**64}}, "data.n: integer out of the 64-bit range"),
    ({"created_at": 10**17}, "created_at: must be epoch milliseconds before the year 10000"),
    ({"send_at": 10**16}, "send_at: must be epoch milliseconds before the year 10000"),
    ({"dedup": {"actor": "a" * 300}}, "dedup.actor: 300 bytes is over"),
    ({"recipients": [], "audience": {"kind": "followers", "id": "u|x"}},
     "audience.id: 'u|x' is not a user id"),
])
def test_request_limits_name_the_field(fields, reason):
    with pytest.raises(ValidationFailed) as e:
        decode_request(req("u1", **fields))
    assert e.value.reason.startswith(reason), e.value.reason


@pytest.mark.parametrize(("raw", "reason"), [
    ({"user_id": "u1", "opt_out_types": ["marketing\n"]}, "opt_out_types[0]: 'marketing\\n'"),
    ({"user_id": "u1", "phone": "+15551234567\n"}, "phone: '+15551234567\\n' is not"),
    ({"user_id": "u1\n"}, "user_id: 'u1\\n' is not a user id"),
    ({"user_id": "u1", "quiet_hours": {"start": "22:00\n", "end": "07:00", "tz": "UTC"}},
     "quiet_hours.start:"),
    ({"user_id": "u1", "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "../etc"}},
     "quiet_hours.tz:"),
    ({"user_id": "u1", "email": "a b@c"}, "email:"),
])
def test_settings_limits_name_the_field(raw, reason):
    with pytest.raises(ValidationFailed) as e:
        decode_settings(orjson.dumps(raw))
    assert e.value.reason.startswith(reason), e.value.reason


@pytest.mark.parametrize(("fields", "reason"), [
    ({"token_id": "ipad\n"}, "token_id: 'ipad\\n'"),
    ({"token": "ab/../x"}, "token: 'ab/../x' is not a device token"),
    ({"user_id": "u:1"}, "user_id: 'u:1' is not a user id"),
])
def test_device_limits_name_the_field(fields, reason):
    d = {"user_id": "u1", "token_id": "ipad", "platform": "apns", "token": "ab" * 32, **fields}
    with pytest.raises(ValidationFailed) as e:
        decode_device(orjson.dumps(d))
    assert e.value.reason.startswith(reason), e.value.reason


# --- tombstones with odd keys ----------------------------------------------------------

def test_tombstones_with_odd_keys_are_rejected_with_a_reason_not_dropped():
    out = PartitionProcessor(0, N).process([
        (SETTINGS, b"\xff\xfe", None, 1),
        (SETTINGS, None, None, 2),
        (DEVICES, b"no-colon", None, 3),
        (DEVICES, b"u1:ipad\n", None, 4),
        (SUBSCRIPTIONS, b"garbage", None, 5),
        (SUBSCRIPTIONS, b"u1|fans:x", None, 6),
    ], NOW)
    assert reasons(out) == [
        "key: not UTF-8", "key: a tombstone needs the user id as its key",
        "key: must be 'user_id:token_id'", "key: token_id: 'ipad\\n' is not a device name "
        "(pattern ^[A-Za-z0-9._@:+-]{1,128}$)", "key: must be 'user_id|target'",
        "target: 'fans:x' is not 'followers:<user id>' or 'topic:<name>'"]


def test_tombstones_for_another_partitions_user_are_rerouted_there():
    other = user_in(2)
    out = PartitionProcessor(0, N).process([
        (SETTINGS, other.encode(), None, 1), (DEVICES, f"{other}:ipad".encode(), None, 2)], NOW)
    assert out.reroute == [(SETTINGS, 2, other.encode(), None),
                           (DEVICES, 2, f"{other}:ipad".encode(), None)]
    assert out.settings_copy == [] and out.rejected == []


# --- 2: a record or an item that raises is rejected alone -------------------------------

def test_a_record_that_makes_routing_raise_is_rejected_alone(monkeypatch):
    real = partition_mod.route

    def route(r, user, *a, **kw):
        if r.id == "boom":
            a[2].append(object())  # half-done work that must not leak out
            raise RuntimeError("surprise")
        return real(r, user, *a, **kw)

    monkeypatch.setattr(partition_mod, "route", route)
    u = user_in(0)
    out = PartitionProcessor(0, N).process([
        (REQUEST, u.encode(), req(u, id="a"), 1), (REQUEST, u.encode(), req(u, id="boom"), 2),
        (REQUEST, u.encode(), req(u, id="b"), 3)], NOW)
    assert [t.notification_id for t in out.inapp] == ["a", "b"]
    assert reasons(out) == ["internal error: RuntimeError: surprise"]
    assert [r.notification_id for r in out.receipts if r.outcome == "rejected"] == ["boom"]
    assert all(isinstance(r, type(out.receipts[0])) for r in out.receipts)


def test_a_held_request_that_raises_on_release_is_rejected_alone(monkeypatch):
    proc = PartitionProcessor(0, N)
    u = user_in(0)
    proc.process([(REQUEST, u.encode(), req(u, id="late", send_at=NOW + 1000), 1),
                  (REQUEST, u.encode(), req(u, id="late2", send_at=NOW + 1000), 2)], NOW)
    real = PartitionProcessor._deliver

    def deliver(self, r, *a):
        if r.id == "late":
            raise KeyError("held")
        return real(self, r, *a)

    monkeypatch.setattr(PartitionProcessor, "_deliver", deliver)
    out = proc.tick(NOW + 2000)
    assert [t.notification_id for t in out.inapp] == ["late2"]
    [(_k, msg)] = out.rejected
    body = orjson.loads(msg)
    assert body["reason"] == "internal error: KeyError: 'held'" and body["source"]["offset"] == -1


def test_the_sender_raising_for_one_task_fails_that_task_only():
    def send(tasks):
        if any(t.notification_id == "bad" for t in tasks):
            raise ValueError("no")
        return [SendResult(t, "sent") for t in tasks]

    out = isolated(send, [task(), task(notification_id="bad"), task(notification_id="n3")],
                   "push")
    assert [(r.task.notification_id, r.status) for r in out] == [
        ("n1", "sent"), ("bad", "failed"), ("n3", "sent")]
    assert out[1].reason == "push: internal error: ValueError: no"


def test_settle_turns_a_result_that_raises_into_a_failed_receipt(monkeypatch):
    from sinks import channels

    def boom(*a, **kw):
        raise OverflowError("due")

    monkeypatch.setattr(channels, "plan_retry", boom)
    s = settle([SendResult(task(), "retry", "503"), SendResult(task(notification_id="n2"),
                                                               "sent")],
               NOW, BackoffPolicy(), random.Random(1))
    assert [(r.notification_id, r.outcome) for r in s.receipts] == [("n1", "failed"),
                                                                   ("n2", "sent")]


def test_retry_after_that_is_not_finite_is_ignored():
    """inf made the due time overflow (int(inf)) in the sink: the whole batch raised."""
    assert parse_retry_after("inf") is None and parse_retry_after("nan") is None
    assert parse_retry_after("1e300") == 86_400.0 and parse_retry_after("3") == 3.0


def test_an_escalation_of_a_long_id_still_passes_validation():
    long_id = "n" * MAX_ID_BYTES
    esc = escalation_id(long_id, "sms")
    assert len(esc.encode()) <= MAX_ID_BYTES and esc == escalation_id(long_id, "sms")
    assert escalation_id("n1", "sms") == "n1~sms"


# --- the retry topic -------------------------------------------------------------------

class Msg:
    def __init__(self, value: bytes | None, key: bytes | None = b"u1") -> None:
        self.value, self.key, self.partition, self.offset = value, key, 0, 9


@pytest.mark.parametrize(("value", "reason"), [
    (None, "payload: empty message (null value)"),
    (b"garbage", "payload: not valid JSON"),
    (b"[1, 2]", "payload: Expected `object`"),
    (lambda: encode_envelope(RetryEnvelope(task(channel="fax"), NOW, NOW)),
     "task.provider: 'apns' does not serve channel 'fax'"),
    (lambda: encode_envelope(RetryEnvelope(task(), 10**20, NOW)), "due_ms:"),
    (lambda: encode_envelope(RetryEnvelope(task(attempt=10**9), NOW, NOW)), "task.attempt:"),
    (lambda: encode_envelope(RetryEnvelope(task(quiet=("22:00", "07:00", "Nowhere/X")), NOW,
                                           NOW)), "task.quiet.tz:"),
    (lambda: encode_envelope(RetryEnvelope(task(user_id="x\nvictim"), NOW, NOW)),
     "task.user_id:"),
])
def test_bad_retry_records_are_rejected_with_a_reason_not_dropped(value, reason):
    """They were logged and dropped (or, like an unknown channel, dropped without a word)."""
    raw = value() if callable(value) else value
    key, msg, _receipt = envelope_or_rejected(Msg(raw))
    body = orjson.loads(msg)
    assert body["reason"].startswith(reason), body["reason"]
    assert body["source"] == {"topic": "retry", "partition": 0, "offset": 9}


def test_a_good_retry_record_passes():
    env = RetryEnvelope(task(), NOW, NOW + 1000)
    assert envelope_or_rejected(Msg(encode_envelope(env))) == env
    assert msgspec.json.decode(encode_envelope(env), type=RetryEnvelope) == env


def test_presence_and_subscription_records_with_odd_values_are_rejected():
    u = user_in(0)
    out = PartitionProcessor(0, N).process([
        (PRESENCE, u.encode(), orjson.dumps({"user_id": u, "seen_ms": 10**18}), 1),
        (SUBSCRIPTIONS, b"k", orjson.dumps({"user_id": u, "target": "topic:a\nb"}), 2),
    ], NOW)
    assert reasons(out) == ["seen_ms: must be epoch milliseconds before the year 10000",
                            "target: 'a\\nb' contains control characters"]
