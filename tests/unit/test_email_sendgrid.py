"""SendGrid mail/send batching and classification, from SendGrid's documented answers."""

from email.message import Message

import pytest

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import email_sendgrid as sg

CFG = Settings()


def task(i: int = 0, **kw) -> DeliveryTask:
    base = dict(notification_id=f"n{i}", user_id=f"u{i}", type="digest.weekly",
                priority="normal", channel="email", provider="sendgrid", target_id="email",
                address=f"u{i}@x.io", title="Your week", body="Hello", template=None,
                data={"name": f"U{i}", "n": i}, collapse_key=None, created_ms=0)
    base.update(kw)
    return DeliveryTask(**base)


def test_sendgrid_group_same_content_up_to_1000_personalizations():
    tasks = [task(i) for i in range(2500)] + [task(9999, body="other")]
    assert sorted(len(g) for g in sg.group(tasks)) == [1, 500, 1000, 1000]


def test_sendgrid_group_splits_by_locale_and_template_not_by_per_user_text():
    tasks = [task(1, template="d-1", title="a"), task(2, template="d-1", title="b"),
             task(3, template="d-1", locale="de"), task(4, template="d-2"), task(5)]
    assert sorted(len(g) for g in sg.group(tasks)) == [1, 1, 1, 2]


def test_sendgrid_build_request_content_mail_with_nid_and_substitutions():
    mail = sg.build_request([task(0), task(1)], CFG)
    assert mail["from"] == {"email": CFG.email_from} and mail["subject"] == "Your week"
    assert mail["content"] == [{"type": "text/plain", "value": "Hello"}]
    p = mail["personalizations"][1]
    assert p["to"] == [{"email": "u1@x.io"}] and p["custom_args"] == {"nid": "n1"}
    assert p["substitutions"] == {"{{name}}": "U1", "{{n}}": "1"}


def test_sendgrid_build_request_template_mail_with_dynamic_data():
    mail = sg.build_request([task(3, template="d-abc", locale="fr")], CFG)
    assert mail["template_id"] == "d-abc" and "content" not in mail and "subject" not in mail
    p = mail["personalizations"][0]
    assert p["dynamic_template_data"] == {"locale": "fr", "name": "U3", "n": 3}
    assert "substitutions" not in p


def test_sendgrid_classify_429_waits_until_ratelimit_reset():
    body = b'{"errors":[{"field":null,"message":"too many requests"}]}'
    r = sg.classify_error([task(1), task(2)], 429, {"X-RateLimit-Reset": "1030"}, body,
                          now=lambda: 1000.0)
    assert [(x.status, x.retry_after) for x in r] == [("retry", 30.0), ("retry", 30.0)]
    assert r[0].reason == "sendgrid 429: too many requests"


def test_sendgrid_classify_reads_headers_of_the_library_exception():
    h = Message()
    h["x-ratelimit-reset"] = "1005"  # HTTPMessage: case-insensitive, as urllib gives it
    r = sg.classify_error([task()], 429, h, b"", now=lambda: 1000.0)
    assert r[0].retry_after == 5.0


@pytest.mark.parametrize(("status", "want"), [(500, "retry"), (503, "retry"), (400, "failed"),
                                              (401, "failed"), (403, "failed"), (413, "failed")])
def test_sendgrid_classify_error_status(status, want):
    body = b'{"errors":[{"field":"from","message":"bad"}]}'
    r = sg.classify_error([task()], status, {}, body)
    assert r[0].status == want and r[0].reason == f"sendgrid {status}: bad"


def test_sendgrid_make_client_points_at_configured_host():
    c = sg.make_client(Settings(sendgrid_url="http://127.0.0.1:9", failover_timeout_s=3))
    assert c.host == "http://127.0.0.1:9" and c.client.timeout == 3
