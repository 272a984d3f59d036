"""A re-send is seen once: the push sink's requests carry a collapse identity, so the
second copy of a notification (what a crash between the provider's answer and the
sent-marker re-sends) replaces the first on the device instead of showing beside it.

Through the real push sender (libcurl over h2c, the shared rate-limit buckets in Redis)
against the stack's sandbox and its device model (``GET /_sandbox/visible``).  Email has no
such identity: the same email sent twice is read twice.
"""

from __future__ import annotations

import time
import uuid

import pytest

from notiflow.config import Settings
from sandbox.client import SandboxControl
from schemas.task import DeliveryTask
from sinks.channels import PushSender
from sinks.failover import FailoverSender


@pytest.fixture
def cfg(stack) -> Settings:
    url = stack.sandbox_url
    return Settings(redis_url=stack.redis_url, apns_url=url, fcm_url=url, sendgrid_url=url,
                    ses_url=url, mailgun_url=url)


@pytest.fixture
def sb(stack):
    with SandboxControl(stack.sandbox_url) as c:
        yield c


@pytest.fixture
def run() -> str:
    """A prefix of this test's device tokens: the stack's sandbox is shared."""
    return f"col{uuid.uuid4().hex[:10]}"


def task(nid: str, provider: str, address: str, collapse_key: str | None = None,
         data: dict | None = None) -> DeliveryTask:
    channel = "email" if provider == "sendgrid" else "push"
    return DeliveryTask(notification_id=nid, user_id="u-collapse", type="social.like",
                        priority="high", channel=channel, provider=provider,
                        target_id="email" if channel == "email" else "phone",
                        address=address, title="T", body="B", template=None, data=data,
                        collapse_key=collapse_key, created_ms=int(time.time() * 1000))


def test_a_push_sent_twice_is_on_the_wire_twice_and_seen_once(cfg, sb, run):
    tasks = [task(f"{run}-n1", "apns", f"{run}-ios"),
             task(f"{run}-n1", "fcm", f"{run}-android"),
             # a bundle: its own id, the members' collapse key
             task(f"{run}-b1", "apns", f"{run}-ios", "likes:photo9", {"bundle": ["a", "b"]}),
             task(f"{run}-b1", "fcm", f"{run}-android", "likes:photo9", {"bundle": ["a", "b"]})]
    sender = PushSender(cfg)
    try:
        for _ in range(2):  # the second time: a replay after the answer, before the marker
            assert [r.status for r in sender.send(tasks)] == ["sent"] * len(tasks)
    finally:
        sender.close()
    assert sb.visible(target_prefix=run) == {
        "devices": 2, "shown": 4, "visible_duplicates": 0, "transport_duplicates": 4}
    assert sb.visible("apns", target_prefix=run)["transport_duplicates"] == 2


def test_an_email_sent_twice_is_read_twice(cfg, sb, run):
    """What remains for email (and SMS): no provider identity replaces a delivered message,
    so only not sending twice helps; the device model counts it as seen twice."""
    sender = FailoverSender(cfg, ["sendgrid"])
    try:
        t = task(f"{run}-e1", "sendgrid", f"{run}@example.com")
        for _ in range(2):
            assert [r.status for r in sender.send([t])] == ["sent"]
    finally:
        sender.close()
    assert sb.visible("sendgrid", target_prefix=run) == {
        "devices": 1, "shown": 2, "visible_duplicates": 1, "transport_duplicates": 1}
