"""Retry planning and the timer queue, with a fixed clock and a seeded RNG."""

import random

import msgspec
import orjson

from operators.backoff import BackoffPolicy
from operators.retry_plan import FIRST_ERRORS, LAST_ERRORS, LEFT_OUT, plan_retry
from operators.retry_queue import RetryQueue
from schemas.retry import RetryEnvelope
from schemas.task import DeliveryTask

T = DeliveryTask("n1", "u1", "social.like", "high", "push", "apns", "phone", "tok", "t", "b",
                 None, None, None, created_ms=1_000)
POLICY = BackoffPolicy(base_s=1.0, cap_s=60.0, deadline_s=3600.0)


def test_retry_plan_first_failure_sets_deadline_and_records_error():
    env = plan_retry(T, "apns", "apns 503", None, 10_000, POLICY, random.Random(1))
    assert env.dead_reason == ""
    assert env.task.attempt == 2 and env.deadline_ms == 10_000 + 3_600_000
    assert env.task.errors == ("attempt 1 at 10000 apns: apns 503",)
    assert 10_000 <= env.due_ms <= 11_000  # full jitter within base * 2**0


def test_retry_plan_honours_retry_after_as_floor():
    env = plan_retry(T, "apns", "429", 30.0, 0, POLICY, random.Random(1))
    assert env.due_ms >= 30_000


def test_retry_plan_dead_letters_after_deadline_with_the_first_and_last_errors():
    t, now = T, 0
    env = None
    for _ in range(200):
        env = plan_retry(t, "apns", "apns 503", None, now, POLICY, random.Random(2))
        if env.dead_reason:
            break
        t, now = env.task, env.due_ms
    assert env is not None and env.dead_reason.startswith("still failing after 1 h")
    # the first attempts' errors and the latest ones', bounded however many attempts
    n = env.task.attempt - 1
    assert n > FIRST_ERRORS + LAST_ERRORS + 1
    wanted = [*(f"attempt {i} at " for i in range(1, FIRST_ERRORS + 1)), LEFT_OUT,
              *(f"attempt {i} at " for i in range(n - LAST_ERRORS + 1, n + 1))]
    assert len(env.task.errors) == len(wanted)
    assert all(line.startswith(w) for line, w in zip(env.task.errors, wanted, strict=True))


def test_retry_plan_expiring_notification_goes_to_dlq_as_expired():
    t = msgspec.structs.replace(T, expires_ms=10_500)
    env = plan_retry(t, "apns", "apns 503", 5.0, 10_000, POLICY, random.Random(1))
    assert env.dead_reason == "expired before the next retry"


# 2026-01-15 22:59:50 in Paris (UTC+1): ten seconds before the user's quiet hours begin
BEFORE_QUIET = 1_768_514_390_000
QUIET_END = 1_768_543_200_000  # 2026-01-16 07:00 Paris
QUIET = ("23:00", "07:00", "Europe/Paris")
DAY = BackoffPolicy(base_s=1.0, cap_s=60.0, deadline_s=24 * 3600.0)  # the default deadline


def test_retry_due_inside_quiet_hours_waits_for_their_end():
    t = msgspec.structs.replace(T, quiet=QUIET, priority="normal")
    env = plan_retry(t, "apns", "apns 503", 30.0, BEFORE_QUIET, DAY, random.Random(1))
    assert env.dead_reason == "" and env.due_ms == QUIET_END
    early = plan_retry(t, "apns", "apns 503", 2.0, BEFORE_QUIET - 60_000, DAY,
                       random.Random(1))
    assert early.due_ms < BEFORE_QUIET  # due before quiet hours begin: not moved


def test_critical_retry_ignores_quiet_hours_and_expiry_inside_them_is_dead():
    crit = msgspec.structs.replace(T, quiet=QUIET, priority="critical")
    env = plan_retry(crit, "apns", "apns 503", 30.0, BEFORE_QUIET, DAY, random.Random(1))
    assert env.due_ms < BEFORE_QUIET + 60_000
    exp = msgspec.structs.replace(T, quiet=QUIET, priority="low",
                                  expires_ms=BEFORE_QUIET + 3_600_000)
    env = plan_retry(exp, "apns", "apns 503", 30.0, BEFORE_QUIET, DAY, random.Random(1))
    assert env.dead_reason == "expired before the next retry"


def test_tasks_routed_before_the_quiet_field_still_decode():
    from schemas.task import decode_task, encode_task

    fields = orjson.loads(encode_task(T))  # DeliveryTask is array_like
    old = orjson.dumps(fields[:DeliveryTask.__struct_fields__.index("quiet")])  # before quiet
    assert decode_task(old) == T


def test_retry_queue_releases_in_due_order_and_survives_snapshot():
    q = RetryQueue()
    for due in (300, 100, 200):
        q.add(RetryEnvelope(task=msgspec.structs.replace(T, notification_id=f"n{due}"),
                            due_ms=due, deadline_ms=10_000))
    assert q.next_due_ms() == 100
    assert [e.task.notification_id for e in q.due(150)] == ["n100"]
    q2 = RetryQueue.restore(q.snapshot())
    assert [e.task.notification_id for e in q2.due(1_000)] == ["n200", "n300"]
    assert q2.next_due_ms() is None


def test_retry_queue_admits_each_attempt_of_a_chain_once_even_after_restore():
    """A crash replays the retry topic: the same attempt arriving twice must not fork the chain."""
    q = RetryQueue()
    a2 = RetryEnvelope(task=msgspec.structs.replace(T, attempt=2), due_ms=100, deadline_ms=50_000)
    assert q.add(a2)
    q2 = RetryQueue.restore(q.snapshot())
    assert not q2.add(a2) and q2.dropped == 1  # the replayed copy
    assert len(q2) == 1
    a3 = RetryEnvelope(task=msgspec.structs.replace(T, attempt=3), due_ms=200, deadline_ms=50_000)
    assert q2.add(a3)
    # a manual DLQ replay (deadline 0) starts a new chain: admitted
    assert q2.add(RetryEnvelope(task=msgspec.structs.replace(T, attempt=3), due_ms=5, deadline_ms=0))
    # another chain of the same task (new deadline after a replay) is its own chain
    assert q2.add(RetryEnvelope(task=msgspec.structs.replace(T, attempt=2), due_ms=5,
                                deadline_ms=90_000))
    # chains past their deadline are forgotten at the next sweep
    q2.due(120_000)
    assert q2.snapshot()[1] == []


def test_retry_queue_releases_only_the_newest_attempt_of_a_chain():
    """After a restore, attempts 5 and 6 of one chain can both be waiting: only 6 goes on."""
    q = RetryQueue()
    for a in (5, 6):
        assert q.add(RetryEnvelope(task=msgspec.structs.replace(T, attempt=a), due_ms=100,
                                   deadline_ms=50_000))
    assert [e.task.attempt for e in q.due(200)] == [6]


def test_unique_sends_keeps_the_latest_attempt_of_copies_in_one_batch():
    from sinks.delivery import unique_sends

    a5, a6 = (msgspec.structs.replace(T, attempt=a) for a in (5, 6))
    other = msgspec.structs.replace(T, user_id="someone-else")
    keep, dup = unique_sends([a5, other, a6])
    assert sorted((t.user_id, t.attempt) for t in keep) == sorted(
        [(T.user_id, 6), ("someone-else", T.attempt)])
    assert dup == [a5]
