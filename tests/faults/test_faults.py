"""The fault suite: real faults injected into the running stack, each test with a figure.

Every test publishes a run of notifications, injects one fault, and checks the golden
rules at the provider (the sandbox's record of what it accepted): every accepted
notification delivered, none lost, none duplicated.  The summary table is printed at the
end of the pytest run (``fault suite`` section); they are the real provider
incidents these come from (the README, "Delivery guarantees").
"""

from __future__ import annotations

import os
import time
import uuid

from tests.faults.conftest import (
    accepted_counts,
    publish,
    put_device_user,
    record,
    sent_counts,
    wait_for,
)

FANOUT_FAILED = "fan-out writes to Redis failed"  # the routed sink's log line per failed try
STOP_S = float(os.environ.get("NOTIFLOW_FAULT_STOP_S", "90"))


def users(tag: str, n: int) -> list[str]:
    return [f"{tag}-{i}" for i in range(n)]


def test_fault_kill9_flow_mid_run_delivers_each_push_once(stack, flows, producer, sandbox):
    run = f"k9-{uuid.uuid4().hex[:6]}-"
    us = users(run + "u", 200)
    for u in us:
        put_device_user(producer, u)
    producer.flush(10)  # users before their notifications
    ids = []
    kills = 0
    for i in range(3000):
        nid = f"{run}{i}"
        ids.append(nid)
        publish(producer, us[i % len(us)], nid, ["push"])
        if i % 1000 == 999:
            producer.flush(10)
            time.sleep(1.0 + 0.6 * kills)  # crash at different points of an epoch
            flows.kill9("main")
            kills += 1
            flows.start(("main",))
    producer.flush(10)
    wait_for(lambda: len(accepted_counts(sandbox, "apns", run)) >= len(ids), 90)
    got = accepted_counts(sandbox, "apns", run)
    row = record("kill -9 the main flow 3x during 3,000 pushes", kills, ids, got)
    assert row["lost"] == 0 and row["duplicated"] == 0


def test_fault_provider_down_then_back_delivers_everything(stack, flows, producer, sandbox):
    run = f"down-{uuid.uuid4().hex[:6]}-"
    us = users(run + "u", 50)
    for u in us:
        put_device_user(producer, u, platform="fcm")
    producer.flush(10)  # users before their notifications
    sandbox.faults("fcm", status=503, rate=1.0)
    ids = [f"{run}{i}" for i in range(300)]
    for i, nid in enumerate(ids):
        publish(producer, us[i % len(us)], nid, ["push"])
    producer.flush(10)
    time.sleep(2.5)  # FCM is down; every send fails and waits in the retry flow's timers
    flows.kill9("retry")  # ...which crashes with retries pending, and comes back
    flows.start(("retry",))
    time.sleep(1.5)
    failed_while_down = sandbox.stats()["fcm"]["by_status"].get("503", 0)
    sandbox.clear_faults()
    wait_for(lambda: len(accepted_counts(sandbox, "fcm", run)) >= len(ids), 90)
    got = accepted_counts(sandbox, "fcm", run)
    row = record("FCM 503 for 4 s + kill -9 of the retry flow", failed_while_down, ids, got)
    assert failed_while_down >= len(ids)
    assert row["lost"] == 0 and row["duplicated"] == 0
    wait_for(lambda: len(sent_counts(stack, run)) >= len(ids), 30)
    assert sorted(sent_counts(stack, run).values()) == [1] * len(ids)  # receipts agree


def test_fault_429_retry_after_is_honoured(stack, flows, producer, sandbox):
    run = f"r429-{uuid.uuid4().hex[:6]}-"
    us = users(run + "u", 20)
    for u in us:
        put_device_user(producer, u)
    producer.flush(10)
    time.sleep(1)
    sandbox.faults("apns", status=429, rate=1.0, count=20, retry_after=3)
    t0 = time.time() * 1000
    ids = [f"{run}{i}" for i in range(20)]
    for i, nid in enumerate(ids):
        publish(producer, us[i], nid, ["push"])
    producer.flush(10)
    wait_for(lambda: len(accepted_counts(sandbox, "apns", run)) >= len(ids), 60)
    msgs = [m for m in sandbox.messages("apns") if (m["nid"] or "").startswith(run)]
    row = record("APNs 429 with Retry-After: 3", 20, ids, accepted_counts(sandbox, "apns", run))
    assert row["lost"] == 0 and row["duplicated"] == 0
    assert min(m["ts_ms"] for m in msgs) - t0 >= 3000  # nobody retried before Retry-After


def test_fault_partial_batch_failure_retries_only_failed_items(stack, flows, producer, sandbox):
    run = f"part-{uuid.uuid4().hex[:6]}-"
    us = users(run + "u", 100)
    for u in us:
        put_device_user(producer, u)
    producer.flush(10)  # users before their notifications
    sandbox.faults("apns", status=500, rate=0.3, count=150)
    ids = [f"{run}{i}" for i in range(500)]
    for i, nid in enumerate(ids):
        publish(producer, us[i % len(us)], nid, ["push"])
    producer.flush(10)
    wait_for(lambda: len(accepted_counts(sandbox, "apns", run)) >= len(ids), 90)
    failed = sandbox.stats()["apns"]["by_status"].get("500", 0)
    row = record("30 % of a batch failing (APNs 500)", failed, ids,
                 accepted_counts(sandbox, "apns", run))
    assert failed > 0
    assert row["lost"] == 0 and row["duplicated"] == 0


def test_fault_redis_restarted_mid_run(stack, flows, producer, sandbox):
    from stack.services import redis_password, start_redis

    run = f"redis-{uuid.uuid4().hex[:6]}-"
    us = users(run + "u", 100)
    for u in us:
        put_device_user(producer, u)
    producer.flush(10)  # users before their notifications
    ids = [f"{run}{i}" for i in range(600)]
    push_ids = [f"{run}p{i}" for i in range(300)]
    redis_svc = next(s for s in stack.services if s.name == "redis")
    port = int(stack.redis_url.rsplit(":", 1)[1].split("/")[0])
    for i, nid in enumerate(ids[:300]):
        publish(producer, us[i % len(us)], nid, ["inapp"])
    producer.flush(10)
    failed_before = flows.log_count("main", FANOUT_FAILED)
    redis_svc.stop()
    for i, nid in enumerate(ids[300:], start=300):
        publish(producer, us[i % len(us)], nid, ["inapp"])
    for i, nid in enumerate(push_ids):  # push goes on without sent-markers meanwhile
        publish(producer, us[i % len(us)], nid, ["push"])
    for u in us[:10]:  # settings changes meanwhile: the lane's settings-copy writes need Redis
        put_device_user(producer, u)
    producer.flush(10)
    time.sleep(3)  # in-app writes fail while Redis is down: they go to notify.retry
    # ...and Redis stays down until the lane has failed more settings-copy writes than it
    # used to try before it died (5): a lane must ride out a Redis restart, not die of it
    wait_for(lambda: flows.dead() or flows.log_count("main", FANOUT_FAILED) - failed_before > 5,
             60, 0.2)
    assert flows.dead() == []
    stack.services[stack.services.index(redis_svc)] = start_redis(
        port=port, password=redis_password(stack.redis_url))  # the URL every part holds
    wait_for(lambda: flows.dead() or all(n in sent_counts(stack, run) for n in ids), 90)
    assert flows.dead() == []
    got = sent_counts(stack, run)
    row = record("Redis stopped 3+ s mid-run: in-app", 1, ids, got)
    assert row["lost"] == 0 and row["duplicated"] == 0
    wait_for(lambda: len(accepted_counts(sandbox, "apns", run + "p")) >= len(push_ids), 60)
    row = record("Redis stopped 3+ s mid-run: push (no markers)", 1, push_ids,
                 accepted_counts(sandbox, "apns", run + "p"))
    assert row["lost"] == 0 and row["duplicated"] == 0


def test_fault_flow_stopped_while_producers_publish(stack, flows, producer, sandbox):
    run = f"stop-{uuid.uuid4().hex[:6]}-"
    us = users(run + "u", 100)
    for u in us:
        put_device_user(producer, u)
    producer.flush(10)  # users before their notifications
    flows.stop("main")
    ids = [f"{run}{i}" for i in range(1000)]
    soon = int(time.time() * 1000) + int((STOP_S + 120) * 1000)
    t_end = time.time() + STOP_S
    i = 0
    while time.time() < t_end:  # producers keep publishing while the flow is down
        for _ in range(50):
            if i < len(ids):
                publish(producer, us[i % len(us)], ids[i], ["push"], expires_at=soon)
                i += 1
        producer.flush(10)
        time.sleep(STOP_S / 25)
    for nid in ids[i:]:
        publish(producer, us[0], nid, ["push"], expires_at=soon)
    producer.flush(10)
    flows.start(("main",))
    wait_for(lambda: len(accepted_counts(sandbox, "apns", run)) >= len(ids), 120)
    row = record(f"main flow stopped {STOP_S:g} s while publishing", 1, ids,
                 accepted_counts(sandbox, "apns", run))
    assert row["lost"] == 0 and row["duplicated"] == 0


def test_fault_primary_email_provider_failing_fails_over(stack, flows, producer, sandbox):
    run = f"mail-{uuid.uuid4().hex[:6]}-"
    us = users(run + "u", 50)
    for u in us:
        put_device_user(producer, u, email=f"{u}@example.com")
    producer.flush(10)
    time.sleep(1)
    sandbox.faults("sendgrid", status=503, rate=1.0)
    ids = [f"{run}{i}" for i in range(200)]
    try:
        for i, nid in enumerate(ids):
            publish(producer, us[i % len(us)], nid, ["email"])
        producer.flush(10)
        wait_for(lambda: len(accepted_counts(sandbox, "ses", run)) >= len(ids), 60)
    finally:
        sandbox.clear_faults()
    got = accepted_counts(sandbox, "ses", run)
    row = record("SendGrid answering 503: fail over to SES", 1, ids, got)
    assert row["lost"] == 0 and row["duplicated"] == 0
    assert accepted_counts(sandbox, "sendgrid", run) == {}
