"""Every envelope the lanes write to notify.retry passes the retry flow's own checks, and a
rejected one that still names a notification leaves a ``failed`` receipt.

Before: plan_retry appended the provider's reason unbounded, so one long error text (check_task
refuses lines over 2,000 bytes) or many attempts (read_envelope refuses envelopes over
256 KiB) made the retry flow reject the lanes' own envelope, and the task was lost with only
a rejected record, no receipt.
"""

from __future__ import annotations

import random

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.backoff import BackoffPolicy
from operators.retry_gate import envelope_or_rejected
from operators.retry_plan import plan_retry
from schemas.limits import MAX_BODY_BYTES, MAX_TITLE_BYTES
from schemas.receipt import Outcome
from schemas.retry import RetryEnvelope, encode_envelope, read_envelope
from schemas.task import MAX_ATTEMPTS, DeliveryTask

NOW = 1_764_050_000_000
POLICY = BackoffPolicy(base_s=1.0, cap_s=60.0, deadline_s=24 * 3600.0)
# a task as large as the contracts let a request make it
BIG = DeliveryTask("n" * 200, "u1", "social.like", "high", "push", "apns", "phone", "ab" * 32,
                   "t" * MAX_TITLE_BYTES, '"' * MAX_BODY_BYTES, None,
                   {f"k{i}": "\\" * 200 for i in range(20)}, "c" * 64, created_ms=NOW)
reasons = st.one_of(st.text(max_size=3000), st.sampled_from(
    ["", "\x00\n\r" * 900, '"' * 5000, "😀" * 3000, "é" * 10_000, "fcm 400 INVALID_ARGUMENT"]))


class Msg:
    def __init__(self, value: bytes | None) -> None:
        self.value, self.key, self.partition, self.offset = value, b"u1", 0, 9


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reasons=st.lists(reasons, min_size=1, max_size=40),
       first=st.integers(min_value=1, max_value=MAX_ATTEMPTS),
       after=st.one_of(st.none(), st.floats(min_value=0, max_value=3600)))
def test_every_envelope_plan_retry_writes_passes_read_envelope(reasons, first, after):
    task, now = msgspec.structs.replace(BIG, attempt=first), NOW
    for reason in reasons:
        env = plan_retry(task, "apns", reason, after, now, POLICY, random.Random(1))
        raw = encode_envelope(env)
        assert read_envelope(raw) == env
        task, now = env.task, max(now + 1, env.due_ms)


def test_many_attempts_with_long_errors_still_fit():
    task = BIG
    for i in range(500):
        env = plan_retry(task, "fcm", "x" * 10_000 + str(i), None, NOW + i, POLICY,
                         random.Random(i))
        task = env.task
    assert read_envelope(encode_envelope(env)) == env
    assert task.errors[0].startswith("attempt 1 at") and "499" in task.errors[-1]
    assert len(task.errors) <= 10


def test_a_rejected_envelope_naming_a_notification_leaves_a_failed_receipt():
    bad = msgspec.structs.replace(BIG, notification_id="n-42", errors=("x" * 3000,), attempt=7)
    got = envelope_or_rejected(Msg(encode_envelope(RetryEnvelope(bad, NOW, NOW))))
    assert not isinstance(got, RetryEnvelope)
    _key, msg, receipt = got
    reason = orjson.loads(msg)["reason"]
    assert reason.startswith("task.errors[0]:")
    assert receipt is not None
    assert (receipt.notification_id, receipt.user_id, receipt.outcome) == (
        "n-42", "u1", Outcome.FAILED.value)
    assert (receipt.type, receipt.priority, receipt.channel, receipt.provider,
            receipt.target, receipt.attempt, receipt.created_ms) == (
        "social.like", "high", "push", "apns", "phone", 7, NOW)
    assert reason in receipt.reason


def test_the_receipt_keeps_only_what_is_valid():
    raw = orjson.dumps({"task": ["n-43", "u2", "Bad Type\n", "urgent", "fax", "x", "a b",
                                 "", None, None, None, None, None, -5, 0, 10**9],
                        "due_ms": NOW, "deadline_ms": NOW})
    _key, _msg, receipt = envelope_or_rejected(Msg(raw))
    assert receipt is not None and receipt.notification_id == "n-43"
    assert (receipt.type, receipt.priority, receipt.channel, receipt.provider, receipt.target,
            receipt.attempt) == ("", "", "", "", "", 1)
    assert receipt.created_ms == receipt.event_ms


def test_no_receipt_when_the_record_names_no_valid_notification_and_user():
    for raw in (None, b"", b"garbage", b"[" * 5000, b'{"task": 5}', b'{"task": []}',
                orjson.dumps({"task": ["n1", "x\nvictim"]}),
                orjson.dumps({"task": ["", "u1"]}), orjson.dumps({"task": [1, "u1"]})):
        got = envelope_or_rejected(Msg(raw))
        assert not isinstance(got, RetryEnvelope) and got[2] is None, raw
