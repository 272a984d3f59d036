"""SES v2, Mailgun and Vonage sinks against the sandbox: success, errors, injected faults."""

from __future__ import annotations

import uuid

import pytest

from notiflow.config import Settings
from sandbox.client import SandboxControl
from schemas.task import DeliveryTask
from sinks import email_mailgun, email_ses, sms_vonage


@pytest.fixture
def sb(stack):
    c = SandboxControl(stack.sandbox_url)
    c.clear_faults()
    yield c
    c.clear_faults()


@pytest.fixture
def cfg(stack):
    u = stack.sandbox_url
    return Settings(NOTIFLOW_SES_URL=u, NOTIFLOW_MAILGUN_URL=u, NOTIFLOW_VONAGE_URL=u)


def task(provider: str, address: str, **kw) -> DeliveryTask:
    base = dict(notification_id=f"{provider}-{uuid.uuid4().hex[:10]}", user_id="u1",
                type="social.like", priority="high",
                channel="sms" if provider == "vonage" else "email", provider=provider,
                target_id="phone" if provider == "vonage" else "email", address=address,
                title="Hi", body="there", template=None, data=None, collapse_key=None,
                created_ms=1_000_000)
    base.update(kw)
    return DeliveryTask(**base)


def nids(sb: SandboxControl, provider: str) -> dict[str, dict]:
    return {m["nid"]: m for m in sb.messages(provider)}


SINKS = {"ses": email_ses, "mailgun": email_mailgun, "vonage": sms_vonage}
OK_ADDR = {"ses": "ok@x.io", "mailgun": "ok@x.io", "vonage": "+15551112222"}


@pytest.mark.parametrize("provider", SINKS)
def test_success_is_recorded_with_nid(sb, cfg, provider):
    mod = SINKS[provider]
    t = task(provider, OK_ADDR[provider])
    with mod.make_client(cfg) as c:
        (r,) = mod.send(c, [t], cfg)
    assert r.status == "sent" and r.provider_ref
    m = nids(sb, provider)[t.notification_id]
    assert m["target"] == OK_ADDR[provider].lstrip("+")
    assert m["body"] in ("there", "Hi: there")


def test_ses_template_success_and_message_rejected(sb, cfg):
    ok = task("ses", "t@x.io", template="welcome", data={"a": 1})
    bounce = task("ses", "x@bounce.test")
    with email_ses.make_client(cfg) as c:
        r_ok, r_bounce = email_ses.send(c, [ok, bounce], cfg)
    assert r_ok.status == "sent" and nids(sb, "ses")[ok.notification_id]["title"] == "welcome"
    assert r_bounce.status == "failed" and "MessageRejected" in r_bounce.reason
    assert bounce.notification_id not in nids(sb, "ses")


def test_ses_unsigned_request_is_403(stack):
    import httpx

    r = httpx.post(f"{stack.sandbox_url}/v2/email/outbound-emails", json={})
    assert r.status_code == 403
    assert r.headers["x-amzn-errortype"] == "InvalidSignatureException" and r.json()["message"]


def test_mailgun_bad_to_and_bad_key(sb, cfg):
    with email_mailgun.make_client(cfg) as c:
        (r,) = email_mailgun.send(c, [task("mailgun", "not-an-address")], cfg)
        assert r.status == "failed" and "not a valid address" in r.reason
        bad = cfg.model_copy(update={"mailgun_api_key": type(cfg.mailgun_api_key)("")})
        (r,) = email_mailgun.send(c, [task("mailgun", "ok@x.io")], bad)
        assert r.status == "failed" and "401" in r.reason and "Forbidden" in r.reason


def test_mailgun_accepts_urlencoded_form(stack, sb):
    import httpx

    r = httpx.post(f"{stack.sandbox_url}/v3/mg.x.io/messages", auth=("api", "k"),
                   data={"from": "a@x.io", "to": "b@x.io, c@x.io", "subject": "s", "text": "t",
                         "v:nid": "mg-form"})
    assert r.status_code == 200 and r.json()["message"] == "Queued. Thank you."
    assert r.json()["id"].endswith("@mg.x.io>")
    assert sorted(m["target"] for m in sb.messages("mailgun") if m["nid"] == "mg-form") == [
        "b@x.io", "c@x.io"]


def test_vonage_invalid_number_and_bad_credentials(sb, cfg):
    with sms_vonage.make_client(cfg) as c:
        (r,) = sms_vonage.send(c, [task("vonage", "+15005550001")], cfg)
        assert r.status == "failed" and "status 3" in r.reason
        bad = cfg.model_copy(update={"vonage_api_secret": type(cfg.vonage_api_secret)("bad")})
        (r,) = sms_vonage.send(c, [task("vonage", "+15551112222")], bad)
        assert r.status == "failed" and "status 4" in r.reason and "credentials" in r.reason


def test_vonage_errors_keep_http_200(stack, sb):
    import httpx

    r = httpx.post(f"{stack.sandbox_url}/sms/json",
                   json={"api_key": "k", "api_secret": "s", "from": "x", "to": "15005550001",
                         "text": "hi"})
    assert r.status_code == 200
    m = r.json()["messages"][0]
    assert (m["status"], m["to"]) == ("3", "15005550001") and m["error-text"]


@pytest.mark.parametrize(("provider", "status", "reason_has"), [
    ("ses", 429, "TooManyRequestsException"), ("ses", 500, "InternalFailure"),
    ("mailgun", 429, "429"), ("mailgun", 503, "503"),
    ("vonage", 429, "status 1"), ("vonage", 500, "status 5"),
])
def test_injected_fault_is_classified_retry(sb, cfg, provider, status, reason_has):
    mod = SINKS[provider]
    sb.faults(provider, status=status, rate=1.0, count=1, retry_after=2)
    t1, t2 = task(provider, OK_ADDR[provider]), task(provider, OK_ADDR[provider])
    with mod.make_client(cfg) as c:
        r1, r2 = mod.send(c, [t1, t2], cfg)
    assert r1.status == "retry" and reason_has in r1.reason and r1.retry_after == 2.0
    assert r2.status == "sent"  # count=1: only the first fails
    got = nids(sb, provider)
    assert t1.notification_id not in got and t2.notification_id in got


def test_ses_paused_fault_is_provider_wide_retry_later(sb, cfg):
    sb.faults("ses", status=400, reason="SendingPausedException", count=1)
    with email_ses.make_client(cfg) as c:
        (r,) = email_ses.send(c, [task("ses", "ok@x.io")], cfg)
    assert r.status == "retry" and r.retry_after == 600.0


def test_connection_refused_is_retry(cfg):
    dead = cfg.model_copy(update={"ses_url": "http://127.0.0.1:9", "mailgun_url":
                                  "http://127.0.0.1:9", "vonage_url": "http://127.0.0.1:9"})
    for provider, mod in SINKS.items():
        with mod.make_client(dead) as c:
            (r,) = mod.send(c, [task(provider, OK_ADDR[provider])], dead)
        assert r.status == "retry" and "connection" in r.reason
