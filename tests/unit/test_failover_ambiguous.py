"""Failover after a send without an answer: the email or SMS is never sent by a second
provider when the first may have taken it; clear refusals still fail over.  Fake provider
modules script each provider's answers; the classification runs on real exceptions."""

from __future__ import annotations

import http.client
import random
import sys
import types
import urllib.error

import httpx
import pytest
import requests

from notiflow.config import Settings
from operators.backoff import BackoffPolicy
from operators.retry_plan import plan_retry
from schemas.task import DeliveryTask
from sinks import failover, no_answer
from sinks import results as R

CHAIN = ["sendgrid", "ses", "mailgun"]
READ_TIMEOUT = "ReadTimeout: The read operation timed out"
REFUSED = "ConnectError: [Errno 111] Connection refused"


class Limits:  # no token buckets: every send goes through at once
    def send(self, provider, tasks, send_fn):
        return (send_fn(tasks) if tasks else []), []

    def close(self) -> None:
        pass


@pytest.fixture
def providers(monkeypatch):
    """provider -> (answer(task) -> SendResult, tasks it was sent)."""
    script: dict[str, list] = {}
    for p in CHAIN:
        mod = types.ModuleType(f"fake_{p}")
        calls: list[DeliveryTask] = []
        script[p] = [lambda t: R.sent(t), calls]

        def send(_client, tasks, _cfg, p=p, calls=calls):
            calls.extend(tasks)
            return [script[p][0](t) for t in tasks]

        mod.make_client = lambda cfg: None
        mod.send = send
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        monkeypatch.setitem(failover.MODULES, p, mod.__name__)
    return script


@pytest.fixture
def sender(providers):
    now = [0]
    s = failover.FailoverSender(Settings(breaker_failures=3), CHAIN, lambda: now[0], Limits())
    s.now = now  # type: ignore[attr-defined]
    return s


def task(i: int = 1, **kw) -> DeliveryTask:
    base = dict(notification_id=f"n{i}", user_id=f"u{i}", type="t", priority="high",
                channel="email", provider="sendgrid", target_id="email",
                address=f"u{i}@x.io", title="T", body="B", template=None, data=None,
                collapse_key=None, created_ms=0)
    base.update(kw)
    return DeliveryTask(**base)


def retried(r: R.SendResult) -> DeliveryTask:
    """The task as the retry flow sends it again (errors carry the reason)."""
    env = plan_retry(r.task, r.task.provider, r.reason, r.retry_after, 1_000,
                     BackoffPolicy(), random.Random(1))
    return env.task


def test_no_answer_after_the_request_went_out_is_not_failed_over(providers, sender):
    providers["sendgrid"][0] = lambda t: no_answer.result(t, "sendgrid", READ_TIMEOUT)
    (r,) = sender.send([task()])
    assert r.status == "retry" and no_answer.maybe_taken(r.reason)
    assert r.task.provider == "sendgrid"
    assert providers["ses"][1] == [] and providers["mailgun"][1] == []


@pytest.mark.parametrize("answer", [
    lambda t: no_answer.result(t, "sendgrid", REFUSED),
    lambda t: R.retry(t, "sendgrid 429: too many", 1.0),
    lambda t: R.retry(t, "sendgrid 503: unavailable"),
])
def test_a_clear_refusal_fails_over_to_the_next_provider(providers, sender, answer):
    providers["sendgrid"][0] = answer
    (r,) = sender.send([task()])
    assert r.status == "sent" and r.task.provider == "ses"
    assert [t.notification_id for t in providers["ses"][1]] == ["n1"]


def test_a_retry_stays_with_the_provider_that_may_have_taken_it(providers, sender):
    providers["sendgrid"][0] = lambda t: no_answer.result(t, "sendgrid", READ_TIMEOUT)
    (first,) = sender.send([task(1)])
    # the next try at sendgrid is refused: still never sent by another provider
    providers["sendgrid"][0] = lambda t: R.retry(t, "sendgrid 503: unavailable")
    (second,) = sender.send([retried(first)])
    assert second.status == "retry" and second.task.provider == "sendgrid"
    assert no_answer.maybe_taken(second.reason)
    # the breaker opens on sendgrid meanwhile: the task waits for it, other tasks fail over
    for _ in range(3):
        sender.send([task(9)])
    assert sender.breakers["sendgrid"].state == "open"
    third, fresh = sorted(sender.send([retried(second), task(2)]),
                          key=lambda r: r.task.notification_id)
    assert third.status == "retry" and third.task.provider == "sendgrid"
    assert fresh.status == "sent" and fresh.task.provider == "ses"
    assert "n1" not in {t.notification_id for p in ("ses", "mailgun")
                        for t in providers[p][1]}
    # once sendgrid answers, it is sent there, once
    providers["sendgrid"][0] = lambda t: R.sent(t)
    sender.now[0] += 3_600_000  # the breaker lets a probe through
    (fourth,) = sender.send([retried(third)])
    assert fourth.status == "sent" and fourth.task.provider == "sendgrid"


def test_pinned_and_fresh_tasks_in_one_batch(providers, sender):
    providers["sendgrid"][0] = lambda t: no_answer.result(t, "sendgrid", READ_TIMEOUT)
    (pin,) = sender.send([task(1)])
    providers["sendgrid"][0] = lambda t: R.retry(t, "sendgrid 429: slow down")
    out = {r.task.notification_id: r for r in sender.send([retried(pin), task(2), task(3)])}
    assert out["n1"].status == "retry" and out["n1"].task.provider == "sendgrid"
    assert out["n2"].status == out["n3"].status == "sent"
    assert {t.notification_id for t in providers["ses"][1]} == {"n2", "n3"}


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


@pytest.mark.parametrize(("error", "sent_maybe"), [
    (_err(httpx.ConnectError("[Errno 111] Connection refused")), False),
    (_err(httpx.ConnectTimeout("timed out")), False),
    (_err(httpx.PoolTimeout("no connection")), False),
    (_err(urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))), False),
    (_err(requests.exceptions.ConnectTimeout("connect timed out")), False),
    (_err(requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='api.twilio.com', port=443): Max retries exceeded (Caused "
        "by NewConnectionError('Failed to establish a new connection: [Errno 111]'))")), False),
    (_err(httpx.ReadTimeout("The read operation timed out")), True),
    (_err(httpx.RemoteProtocolError("Server disconnected without sending a response.")), True),
    (_err(TimeoutError("timed out")), True),
    (_err(http.client.RemoteDisconnected("Remote end closed connection")), True),
    (_err(requests.exceptions.ReadTimeout("Read timed out. (read timeout=10)")), True),
])
def test_which_errors_may_have_reached_the_provider(error, sent_maybe):
    assert no_answer.never_sent(error) is not sent_maybe
    assert no_answer.maybe_taken(no_answer.result(task(), "ses", error).reason) is sent_maybe
