"""Property-based fuzzing (hypothesis) of every decoder and of route -> payload builders.

The properties are stronger than "nothing escapes the step" (the per-record guard in
operators/partition.py would make that true of any bug): decoders raise nothing but
``ValidationFailed``; the router never needs its guard (no rejection says "internal
error"); and every task a validated record (or a checked retry envelope) turns into builds
its payload for every provider without raising.  A hostile corpus runs the same paths.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notiflow.config import Settings
from operators.partition import (
    DEVICES,
    PRESENCE,
    REQUEST,
    SETTINGS,
    SUBSCRIPTIONS,
    PartitionProcessor,
)
from operators.retry_gate import envelope_or_rejected
from schemas.device import decode_device
from schemas.errors import TOO_DEEP, ValidationFailed
from schemas.limits import MAX_EPOCH_MS
from schemas.presence import decode_presence
from schemas.receipt import Receipt
from schemas.request import decode_request
from schemas.retry import RetryEnvelope, read_envelope
from schemas.settings import decode_settings
from schemas.subscription import decode_subscription
from schemas.task import DeliveryTask, decode_task
from sinks import apns, email_mailgun, email_sendgrid, email_ses, fcm, sms_twilio, sms_vonage
from sinks.inapp import entry

NOW = 1_764_050_000_000
CFG = Settings()
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NASTY_STRINGS = ["", " ", "\n", "x\nvictim", "u1\n", "marketing.weekly\n", "\x00", "a\x00b",
                 "\ufeffu1", "a:b", "a|b", "followers:", "topic:", "../../etc/passwd",
                 "\u202eevil", "😀" * 50, '"' * 300, "\\" * 300, "%s%n", "${jndi:x}",
                 "x" * 5000, "é" * 3000, "Europe/Paris", "+15551234567", "22:00", "a@b.co"]
NASTY_INTS = [0, -1, 1, NOW, NOW + 60_000, MAX_EPOCH_MS, MAX_EPOCH_MS + 1, 2**63 - 1, 2**63,
              -(2**63) - 1, 2**64, 10**30]

texts = st.one_of(st.text(max_size=40), st.sampled_from(NASTY_STRINGS))
ints = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from(NASTY_INTS))
users = st.one_of(st.sampled_from(["u1", "u2", "u3"]), texts)


def nested(depth: int) -> Any:
    d: Any = 1
    for i in range(depth):
        d = {"k": d} if i % 2 else [d]
    return d


scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False), texts)
json_values = st.one_of(
    st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                              st.dictionaries(texts, c, max_size=4)),
                 max_leaves=20),
    st.integers(min_value=1, max_value=400).map(nested))
datas = st.dictionaries(texts, json_values, max_size=4)

requests = st.fixed_dictionaries(
    {"id": st.one_of(st.sampled_from(["n1", "n2", "n3"]), texts),
     "type": st.one_of(st.sampled_from(["social.like", "marketing.weekly", "a"]), texts),
     "created_at": st.one_of(st.just(NOW), ints),
     "recipients": st.lists(users, max_size=3)},
    optional={
        "v": st.sampled_from([1, 1, 1, 0, 2]),
        "priority": st.sampled_from(["critical", "high", "normal", "low", "urgent"]),
        "channels": st.one_of(st.none(), st.lists(
            st.sampled_from(["push", "email", "sms", "inapp", "fax"]), max_size=5)),
        "collapse_key": st.one_of(st.none(), texts),
        "dedup": st.fixed_dictionaries({}, optional={"actor": texts, "object": texts}),
        "title": st.one_of(st.none(), texts), "body": st.one_of(st.none(), texts),
        "template": st.one_of(st.none(), texts), "data": st.one_of(st.none(), datas),
        "expires_at": st.one_of(st.none(), ints), "send_at": st.one_of(st.none(), ints),
        "audience": st.fixed_dictionaries(
            {"kind": st.sampled_from(["followers", "topic", "all", "everyone"])},
            optional={"id": users, "hybrid": st.booleans()}),
        "extra": scalars,
    })
settings_values = st.fixed_dictionaries(
    {"user_id": users},
    optional={"channels": st.dictionaries(st.sampled_from(["push", "email", "sms", "inapp",
                                                          "fax"]), st.booleans()),
              "opt_out_types": st.lists(texts, max_size=3),
              "quiet_hours": st.fixed_dictionaries({"start": texts, "end": texts, "tz": texts}),
              "email": texts, "phone": texts, "locale": texts})
devices = st.fixed_dictionaries(
    {"user_id": users, "token_id": texts, "platform": st.sampled_from(["apns", "fcm", "mpns"]),
     "token": st.one_of(st.just("ab" * 32), texts)}, optional={"active": st.booleans()})
subscriptions = st.fixed_dictionaries({"user_id": users, "target": st.one_of(
    st.sampled_from(["followers:u1", "topic:x", "fans:u1"]), texts)})
presences = st.fixed_dictionaries({"user_id": users, "seen_ms": ints})
json_of = {REQUEST: requests, SETTINGS: settings_values, DEVICES: devices,
           SUBSCRIPTIONS: subscriptions, PRESENCE: presences}
# valid JSON 1,500 deep where the contract takes any JSON (data): msgspec raises
# RecursionError there, not DecodeError
DEEP_REQUEST = (b'{"id":"deep1500","type":"a.b","created_at":1,"recipients":["u1"],"body":"b",'
                b'"data":' + b'{"k":' * 1500 + b"1" + b"}" * 1501)
raw_bytes = st.one_of(st.binary(max_size=200), st.sampled_from(
    [b"", b"null", b"[]", b"{}", b"\xef\xbb\xbf{}", b'{"a":1,"a":2}', b"\xff\xfe", b"1e999",
     b'"\\ud800"', b"[" * 2000 + b"]" * 2000, b'"' * 600_000, DEEP_REQUEST,
     b'{"task":[' + b"[" * 1500 + b"]" * 1500 + b"]}"]))


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)  # takes what orjson refuses (ints over 64 bits)


@st.composite
def records(draw) -> tuple[int, bytes | None, bytes | None, int]:
    kind = draw(st.sampled_from([REQUEST, SETTINGS, DEVICES, SUBSCRIPTIONS, PRESENCE]))
    value = draw(st.one_of(st.none(), raw_bytes, json_of[kind].map(encode)))
    key = draw(st.one_of(st.none(), st.binary(max_size=30),
                         st.sampled_from([b"u1", b"u1:d1", b"u1|topic:x", b"\xff", b"u1:"])))
    return kind, key, value, draw(st.integers(min_value=0, max_value=10**6))


def user_state() -> list:
    """u1..u3 with an email, a phone and an APNs and an FCM device: every channel routes."""
    out = []
    for u in ("u1", "u2", "u3"):
        out.append((SETTINGS, u.encode(), orjson.dumps(
            {"user_id": u, "email": f"{u}@x.io", "phone": "+15551234567"}), 0))
        for platform in ("apns", "fcm"):
            out.append((DEVICES, f"{u}:{platform}".encode(), orjson.dumps(
                {"user_id": u, "token_id": platform, "platform": platform,
                 "token": "ab" * 32}), 0))
    return out


def build_every_payload(t: DeliveryTask) -> None:
    """What each sink builds for a task; a valid task must never make one raise."""
    if t.channel == "push":
        for mod in (apns, fcm):
            mod.check(t, mod.build_request(t, CFG))
    elif t.channel == "email":
        email_sendgrid.build_request([t], CFG)
        email_ses.build_request(t, CFG)
        email_mailgun.build_request(t, CFG)
    elif t.channel == "sms":
        sms_twilio.body_of(t)
        sms_vonage.build_request(t, CFG)
    else:
        entry(t)


def route_and_build(batch: list) -> None:
    """One processor (a single partition: every user is local), the batch, then every
    timer due (held, bundled), then every payload of every task."""
    proc = PartitionProcessor(0, 1, bundle_windows={"social": 1.0})
    proc.process(user_state(), NOW)
    outs = [proc.process(batch, NOW), proc.tick(NOW + 10_000), proc.tick(MAX_EPOCH_MS)]
    for out in outs:
        for _key, msg in out.rejected:
            reason = orjson.loads(msg)["reason"]
            assert not reason.startswith("internal error"), reason
        for t in out.push + out.email + out.sms + out.inapp:
            build_every_payload(t)
        for r in out.receipts:
            msgspec.json.encode(r)


@pytest.mark.parametrize("decode", [decode_request, decode_settings, decode_device,
                                    decode_subscription, decode_presence, read_envelope])
@FUZZ
@given(raw=raw_bytes)
def test_fuzz_decoders_raise_only_validation_failed_on_any_bytes(decode, raw):
    try:
        decode(raw)
    except ValidationFailed:
        pass


@pytest.mark.parametrize("kind", sorted(json_of))
@FUZZ
@given(data=st.data())
def test_fuzz_decoders_on_nasty_json_raise_only_validation_failed(kind, data):
    decode = {REQUEST: decode_request, SETTINGS: decode_settings, DEVICES: decode_device,
              SUBSCRIPTIONS: decode_subscription, PRESENCE: decode_presence}[kind]
    try:
        decode(encode(data.draw(json_of[kind])))
    except ValidationFailed:
        pass


@FUZZ
@given(raw=raw_bytes)
def test_fuzz_task_and_receipt_decoders_raise_only_decode_errors(raw):
    for decode in (decode_task, lambda b: msgspec.json.decode(b, type=Receipt)):
        try:
            decode(raw)
        except msgspec.DecodeError:
            pass


@FUZZ
@given(batch=st.lists(records(), max_size=8))
def test_fuzz_route_then_every_payload_builder_on_any_records(batch):
    route_and_build(batch)


@FUZZ
@given(batch=st.lists(requests.map(encode), min_size=1, max_size=6))
def test_fuzz_route_then_every_payload_builder_on_nasty_requests(batch):
    route_and_build([(REQUEST, None, v, i) for i, v in enumerate(batch)])


tasks = st.builds(
    DeliveryTask, notification_id=texts, user_id=users, type=texts,
    priority=st.sampled_from(["critical", "high", "normal", "low", "x"]),
    channel=st.sampled_from(["push", "email", "sms", "inapp", "fax"]),
    provider=st.sampled_from(["apns", "fcm", "sendgrid", "ses", "mailgun", "twilio", "vonage",
                              "redis", "x"]),
    target_id=texts, address=texts, title=st.one_of(st.none(), texts),
    body=st.one_of(st.none(), texts), template=st.one_of(st.none(), texts),
    data=st.one_of(st.none(), datas), collapse_key=st.one_of(st.none(), texts),
    created_ms=ints, expires_ms=ints, attempt=ints, locale=texts,
    quiet=st.one_of(st.none(), st.tuples(texts, texts, texts)))


class Msg:
    def __init__(self, value: bytes | None) -> None:
        self.value, self.key, self.partition, self.offset = value, b"k", 0, 1


@FUZZ
@given(task=tasks, due=ints, deadline=ints)
def test_fuzz_retry_records_are_rejected_or_build_every_payload(task, due, deadline):
    """Whatever is on notify.retry: rejected with a reason, or a task every sink can build."""
    got = envelope_or_rejected(Msg(encode(RetryEnvelope(task, due, deadline))))
    if isinstance(got, RetryEnvelope):
        build_every_payload(got.task)
    else:
        assert orjson.loads(got[1])["reason"]


HOSTILE = [
    b'"' * 600_000,  # A1: JSON-escaped, twice the size
    b'{"id":"big","type":"a.b","created_at":1,"recipients":["u1"],"body":"' + b"x" * 20_000
    + b'"}',  # over max_request_bytes
    encode({"id": "deep", "type": "a.b", "created_at": NOW, "recipients": ["u1"], "body": "b",
            "data": nested(300)}),  # A2
    encode({"id": "int", "type": "a.b", "created_at": NOW, "recipients": ["u1"], "body": "b",
            "data": {"n": 2**64}}),
    encode({"id": "nl", "type": "marketing.weekly\n", "created_at": NOW, "recipients": ["u1"],
            "body": "b"}),
    encode({"id": "victim", "type": "a.b", "created_at": NOW, "recipients": ["x\nvictim"],
            "body": "b"}),
    encode({"id": "neg", "type": "a.b", "created_at": -5, "recipients": ["u1"], "body": "b"}),
    encode({"id": "far", "type": "a.b", "created_at": NOW, "recipients": ["u1"], "body": "b",
            "send_at": 10**17}),
    encode({"id": "nul\x00", "type": "a.b", "created_at": NOW, "recipients": ["u1"],
            "body": "b"}),
    encode({"id": 5, "type": ["a"], "created_at": "now", "recipients": "u1"}),
    b"\xef\xbb\xbf" + encode({"id": "bom", "type": "a.b", "created_at": NOW,
                              "recipients": ["u1"], "body": "b"}),
    b'{"id":"sur","type":"a.b","created_at":1,"recipients":["\\ud800"],"body":"b"}',
    b"\xff\xfe\xfd", b"", b"null", b"[]", b"[" * 5000,
    DEEP_REQUEST,  # a 500 at the gateway, an "internal error" in the flow, before
]


@pytest.mark.parametrize("kind", sorted(json_of))
@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_corpus_on_every_topic_is_rejected_with_a_reason(kind, raw):
    proc = PartitionProcessor(0, 1)
    out = proc.process([(kind, b"u1", raw, 3)], NOW)
    assert out.push == out.email == out.sms == out.inapp == []
    [(_k, msg)] = out.rejected
    body = orjson.loads(msg)
    assert body["reason"] and not body["reason"].startswith("internal error")
    assert len(msg) < 4096


def test_a_retry_envelope_nested_too_deeply_is_rejected_with_that_reason():
    task = b'["n1","u1","a.b","normal","inapp","redis","inbox","",null,"b",null,'
    raw = b'{"task":' + task + b'{"k":' * 1500 + b"1" + b"}" * 1500 + b',null,1],"due_ms":1,' \
        b'"deadline_ms":1}'
    got = envelope_or_rejected(Msg(raw))
    assert not isinstance(got, RetryEnvelope)
    assert orjson.loads(got[1])["reason"] == TOO_DEEP


def test_duplicate_keys_take_the_last_value_in_the_flow_as_in_the_gateway():
    """Both decode with msgspec, so the gateway's checks saw what the flow routes."""
    raw = b'{"id":"dup","id":"dup2","type":"a.b","created_at":1,"recipients":["u1"],"body":"b"}'
    out = PartitionProcessor(0, 1).process([(REQUEST, b"u1", raw, 3)], NOW)
    assert [t.notification_id for t in out.inapp] == ["dup2"]
