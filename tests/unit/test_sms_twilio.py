"""Twilio error classification and message building (no network)."""

import pytest
from twilio.base.exceptions import TwilioRestException

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import sms_twilio as tw

CFG = Settings(twilio_url="http://127.0.0.1:9/")


def task(**kw) -> DeliveryTask:
    base = dict(notification_id="n 1/x", user_id="u1", type="security.login",
                priority="critical", channel="sms", provider="twilio", target_id="phone",
                address="+15551234567", title="Login", body="new device", template=None,
                data=None, collapse_key=None, created_ms=0)
    base.update(kw)
    return DeliveryTask(**base)


@pytest.mark.parametrize(("status", "code", "want"), [
    (400, 21211, "failed"), (400, 21614, "failed"), (400, 21610, "unsubscribed"),
    (429, 20429, "retry"), (400, 21611, "retry"), (500, 20500, "retry"),
    (503, None, "retry"), (401, 20003, "failed"),
])
def test_twilio_classify_error_codes(status, code, want):
    e = TwilioRestException(status, "/2010-04-01/Accounts/AC/Messages.json", "m", code)
    r = tw.classify_error(task(), e)
    assert r.status == want and f"{code}" in r.reason


def test_twilio_body_and_status_callback_carry_nid():
    assert tw.body_of(task()) == "Login: new device"
    assert tw.body_of(task(title=None)) == "new device"
    assert tw.status_callback(task(), CFG) == "http://127.0.0.1:9/sms/status?nid=n%201%2Fx"


def test_twilio_make_client_points_api_domain_at_sandbox(monkeypatch):
    monkeypatch.setenv("TWILIO_REGION", "au1")  # would rewrite the host name
    c = tw.make_client(CFG)
    assert c.api.base_url == "http://127.0.0.1:9"
    assert c.get_hostname("http://127.0.0.1:9/x") == "http://127.0.0.1:9/x"
