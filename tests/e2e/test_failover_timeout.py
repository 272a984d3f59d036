"""Email failover against the sandbox when the first provider answers too late: the
request timed out but the provider took it, so another provider must not send it too."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from notiflow.config import Settings
from operators.backoff import BackoffPolicy
from operators.retry_plan import plan_retry
from sandbox.client import SandboxControl
from schemas.task import DeliveryTask
from sinks import no_answer
from sinks.failover import FailoverSender

CHAIN = ["sendgrid", "ses", "mailgun"]


@pytest.fixture
def sb(stack):
    c = SandboxControl(stack.sandbox_url)
    c.clear_faults()
    yield c
    c.clear_faults()


def cfg_for(stack) -> Settings:
    u = stack.sandbox_url
    return Settings(redis_url=stack.redis_url, sendgrid_url=u, ses_url=u, mailgun_url=u,
                    failover_timeout_s=0.5, email_providers=CHAIN)


def task(run: str, i: int) -> DeliveryTask:
    return DeliveryTask(notification_id=f"{run}-{i}", user_id=f"{run}-u{i}", type="test.fo",
                        priority="high", channel="email", provider="sendgrid",
                        target_id="email", address=f"{run}-{i}@example.com", title="T",
                        body="B", template=None, data=None, collapse_key=None,
                        created_ms=int(time.time() * 1000))


def taken(sb: SandboxControl, provider: str, nids: set[str]) -> list[str]:
    return [m["nid"] for m in sb.messages(provider) if m["nid"] in nids]


def test_a_timed_out_send_the_provider_took_is_not_sent_by_the_next_one(stack, sb):
    run = f"fot{uuid.uuid4().hex[:6]}"
    tasks = [task(run, i) for i in range(3)]
    nids = {t.notification_id for t in tasks}
    sb.faults("sendgrid", latency_ms=1500)  # answers after the 0.5 s timeout
    sender = FailoverSender(cfg_for(stack), CHAIN)
    try:
        results = sender.send(tasks)
        assert {r.status for r in results} == {"retry"}
        assert all(no_answer.maybe_taken(r.reason) and r.task.provider == "sendgrid"
                   for r in results), [r.reason for r in results]
        # the ambiguity is real: SendGrid did take them, after the client gave up
        deadline = time.time() + 15
        while sorted(taken(sb, "sendgrid", nids)) != sorted(nids):
            assert time.time() < deadline, taken(sb, "sendgrid", nids)
            time.sleep(0.1)
        assert taken(sb, "ses", nids) == [] and taken(sb, "mailgun", nids) == []

        # the retry goes to SendGrid only, also while it is still too slow
        again = [plan_retry(r.task, r.task.provider, r.reason, None, 0, BackoffPolicy(),
                            random.Random(1)).task for r in results]
        results = sender.send(again)
        assert {(r.status, r.task.provider) for r in results} == {("retry", "sendgrid")}
        assert taken(sb, "ses", nids) == [] and taken(sb, "mailgun", nids) == []
    finally:
        sender.close()
