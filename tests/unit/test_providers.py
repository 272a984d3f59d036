"""Provider request building and error classification, from the providers' documented answers."""

import orjson
import pytest

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import apns, email_sendgrid, fcm
from sinks.push_transport import HttpResp

CFG = Settings()


def task(**kw) -> DeliveryTask:
    base = dict(notification_id="n1", user_id="u1", type="social.like", priority="high",
                channel="push", provider="apns", target_id="phone", address="ab" * 32,
                title="T", body="B", template=None, data={"photo": 9}, collapse_key="like:9",
                created_ms=1_000_000, expires_ms=4_600_000)
    base.update(kw)
    return DeliveryTask(**base)


def test_apns_build_request_sets_headers_and_nid():
    req = apns.build_request(task(), CFG)
    h = dict(req.headers)
    assert req.url.endswith("/3/device/" + "ab" * 32)
    assert h["apns-priority"] == "10" and h["apns-push-type"] == "alert"
    assert h["apns-collapse-id"] == "like:9" and h["apns-expiration"] == "4600"
    assert h["apns-id"] == apns.apns_id(task())  # deterministic: a resend is recognisable
    body = orjson.loads(req.body)
    assert body["nid"] == "n1" and body["aps"]["alert"] == {"title": "T", "body": "B"}


@pytest.mark.parametrize(("status", "body", "headers", "want", "after"), [
    (200, b"", {"apns-id": "x"}, "sent", None),
    (400, b'{"reason":"BadDeviceToken"}', {}, "invalid_target", None),
    (410, b'{"reason":"Unregistered","timestamp":1}', {}, "invalid_target", None),
    (400, b'{"reason":"BadCollapseId"}', {}, "failed", None),
    (413, b'{"reason":"PayloadTooLarge"}', {}, "failed", None),
    (429, b'{"reason":"TooManyRequests"}', {"retry-after": "7"}, "retry", 7.0),
    (503, b'{"reason":"ServiceUnavailable"}', {}, "retry", None),
])
def test_apns_classify_follows_apple_table(status, body, headers, want, after):
    r = apns.classify(task(), HttpResp(status, headers, body))
    assert (r.status, r.retry_after) == (want, after)


def test_apns_connection_error_is_retryable():
    assert apns.classify(task(), HttpResp(0, {}, b"", "timeout")).status == "retry"


def test_apns_send_rejects_oversized_payload_before_network():
    class NoNetwork:
        def send(self, reqs):
            raise AssertionError("must not send")

    r = apns.send(NoNetwork(), [task(body="x" * 5000)], CFG)
    assert r[0].status == "failed" and "4096" in r[0].reason


def fcm_error(status: int, code: str) -> bytes:
    return orjson.dumps({"error": {"code": status, "message": "m", "status": "X", "details": [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]}})


@pytest.mark.parametrize(("status", "code", "want", "after"), [
    (404, "UNREGISTERED", "invalid_target", None),
    (403, "SENDER_ID_MISMATCH", "invalid_target", None),
    (400, "INVALID_ARGUMENT", "failed", None),
    (401, "THIRD_PARTY_AUTH_ERROR", "failed", None),
    (429, "QUOTA_EXCEEDED", "retry", 60.0),
    (503, "UNAVAILABLE", "retry", None),
    (500, "INTERNAL", "retry", None),
])
def test_fcm_classify_uses_error_code_not_status(status, code, want, after):
    r = fcm.classify(task(provider="fcm"), HttpResp(status, {}, fcm_error(status, code)))
    assert (r.status, r.retry_after) == (want, after)


def test_fcm_message_has_string_data_and_collapse_key():
    m = fcm.message(task(provider="fcm"))["message"]
    assert m["data"] == {"photo": "9", "nid": "n1"}
    assert m["android"]["collapse_key"] == "like:9" and m["android"]["priority"] == "HIGH"


def test_sendgrid_groups_same_content_up_to_1000_personalizations():
    tasks = [task(channel="email", provider="sendgrid", address=f"u{i}@x.io",
                  notification_id=f"n{i}") for i in range(2500)]
    tasks.append(task(channel="email", provider="sendgrid", address="z@x.io", body="other"))
    groups = email_sendgrid.group(tasks)
    assert sorted(len(g) for g in groups) == [1, 500, 1000, 1000]
    mail = email_sendgrid.build_request(groups[0], CFG)
    assert mail["personalizations"][0]["custom_args"] == {"nid": "n0"}


@pytest.mark.parametrize(("status", "want"), [(429, "retry"), (503, "retry"), (400, "failed"),
                                              (401, "failed")])
def test_sendgrid_classify_error(status, want):
    body = b'{"errors":[{"field":null,"message":"too many requests"}]}'
    r = email_sendgrid.classify_error([task()], status, {"X-RateLimit-Reset": "0"}, body)
    assert r[0].status == want
