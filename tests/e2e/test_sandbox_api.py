"""The provider sandbox answers the real client libraries with each provider's own shapes."""

from __future__ import annotations

import httpx
import pytest
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from sandbox.client import SandboxControl


@pytest.fixture
def sb(stack):
    c = SandboxControl(stack.sandbox_url)
    yield c
    c.clear_faults()


def mail(n: int, nid: str = "sg-1") -> dict:
    return {"personalizations": [{"to": [{"email": f"u{i}@x.io"}], "custom_args": {"nid": nid}}
                                 for i in range(n)],
            "from": {"email": "a@x.io"}, "subject": "s",
            "content": [{"type": "text/plain", "value": "v"}]}


def test_sandbox_sendgrid_accepts_batch_and_limits_personalizations(stack, sb):
    sg = SendGridAPIClient("SG.test", host=stack.sandbox_url)
    assert sg.send(mail(3, "sg-ok")).status_code == 202
    assert len([m for m in sb.messages("sendgrid") if m["nid"] == "sg-ok"]) == 3
    with pytest.raises(SendGridHTTPError) as e:
        sg.send(mail(1001))
    assert e.value.status_code == 400 and b"1000" in e.value.body


def test_sandbox_sendgrid_429_has_rate_limit_headers(stack, sb):
    sb.faults("sendgrid", status=429, rate=1.0, count=1, retry_after=2)
    with pytest.raises(SendGridHTTPError) as e:
        SendGridAPIClient("SG.test", host=stack.sandbox_url).send(mail(1))
    assert e.value.status_code == 429
    assert e.value.headers["X-RateLimit-Remaining"] == "0" and e.value.headers["X-RateLimit-Reset"]


def test_sandbox_twilio_magic_numbers_and_success(stack, sb):
    c = Client("ACtest", "secret")
    c.api.base_url = stack.sandbox_url
    m = c.messages.create(to="+15551112222", from_="+15550000000", body="hi",
                          status_callback=f"{stack.sandbox_url}/cb?nid=tw-1")
    assert m.sid.startswith("SM") and m.status == "queued"
    assert [x["target"] for x in sb.messages("twilio") if x["nid"] == "tw-1"] == ["+15551112222"]
    for number, code in (("+15005550001", 21211), ("+15005550004", 21610), ("12345", 21211)):
        with pytest.raises(TwilioRestException) as e:
            c.messages.create(to=number, from_="+15550000000", body="hi")
        assert e.value.code == code


def test_sandbox_fcm_error_body_names_error_code(stack, sb):
    with httpx.Client(http1=False, http2=True) as h:
        r = h.post(f"{stack.sandbox_url}/v1/projects/p/messages:send",
                   headers={"authorization": "Bearer x"},
                   json={"message": {"token": "gone-1", "notification": {"title": "t"}}})
        assert r.http_version == "HTTP/2" and r.status_code == 404
        assert r.json()["error"]["details"][0]["errorCode"] == "UNREGISTERED"
        r = h.post(f"{stack.sandbox_url}/v1/projects/p/messages:send",
                   json={"message": {"token": "t"}})
        assert r.status_code == 401


def test_sandbox_apns_checks_headers_and_injected_faults(stack, sb):
    url = f"{stack.sandbox_url}/3/device/abc"
    ok = {"authorization": "bearer j", "apns-topic": "t", "apns-push-type": "alert"}
    with httpx.Client(http1=False, http2=True) as h:
        assert h.post(url, headers=ok, json={"aps": {}}).status_code == 200
        r = h.post(url, headers={**ok, "apns-topic": ""}, json={"aps": {}})
        assert (r.status_code, r.json()["reason"]) == (400, "MissingTopic")
        r = h.post(url, headers=ok, content=b'{"aps":{},"x":"' + b"y" * 5000 + b'"}')
        assert (r.status_code, r.json()["reason"]) == (413, "PayloadTooLarge")
        sb.faults("apns", status=429, rate=1.0, count=2, retry_after=3)
        codes = [h.post(url, headers=ok, json={"aps": {}}) for _ in range(3)]
        assert [c.status_code for c in codes] == [429, 429, 200]
        assert codes[0].json()["reason"] == "TooManyRequests" and codes[0].headers["retry-after"] == "3"
