"""FCM HTTP v1 request building and classification, from Google's documented answers."""

import orjson
import pytest

from notiflow.config import Settings
from schemas.task import DeliveryTask, collapse_identity
from sinks import fcm
from sinks.push_transport import HttpResp

CFG = Settings(fcm_url="http://fcm.test", fcm_project="p1")


def task(**kw) -> DeliveryTask:
    base = dict(notification_id="n1", user_id="u1", type="social.like", priority="high",
                channel="push", provider="fcm", target_id="phone", address="tok-1",
                title="T", body="B", template=None, data={"photo": 9, "s": "x"},
                collapse_key="like:9", created_ms=1_000_000, expires_ms=4_600_000)
    base.update(kw)
    return DeliveryTask(**base)


def fcm_error(status: int, code: str | None) -> bytes:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code}] if code else []
    return orjson.dumps({"error": {"code": status, "message": "m", "status": "X",
                                   "details": details}})


def test_fcm_build_request_url_bearer_and_message():
    req = fcm.build_request(task(), CFG)
    assert req.url == "http://fcm.test/v1/projects/p1/messages:send"
    assert dict(req.headers)["authorization"] == "Bearer sandbox-oauth"
    m = orjson.loads(req.body)["message"]
    assert m["token"] == "tok-1" and m["notification"] == {"title": "T", "body": "B"}


def test_fcm_message_has_string_data_with_nid():
    m = fcm.message(task())["message"]
    assert m["data"] == {"photo": "9", "s": "x", "nid": "n1"}


def test_fcm_message_android_and_apns_options():
    m = fcm.message(task())["message"]
    assert m["android"] == {"priority": "HIGH", "collapse_key": "like:9", "ttl": "3600s",
                            "notification": {"tag": "like:9"}}
    assert m["apns"]["headers"] == {"apns-priority": "10", "apns-collapse-id": "like:9",
                                    "apns-expiration": "4600"}


def test_fcm_message_normal_priority_without_expiry():
    t = task(priority="normal", expires_ms=0, collapse_key=None)
    m = fcm.message(t)["message"]
    ident = collapse_identity(t)
    assert m["android"] == {"priority": "NORMAL", "notification": {"tag": ident}}
    assert m["apns"] == {"headers": {"apns-priority": "5", "apns-collapse-id": ident}}


def test_fcm_every_message_has_a_per_notification_tag_but_no_invented_collapse_key():
    """The tag (Android) and apns-collapse-id (iOS through FCM) make a re-send replace the
    shown notification; android.collapse_key stays the request's own (FCM keeps at most
    four distinct ones a device while it is offline)."""
    one = fcm.message(task(collapse_key=None))["message"]
    again = fcm.message(task(collapse_key=None, attempt=2, address="tok-2"))["message"]
    other = fcm.message(task(collapse_key=None, notification_id="n2"))["message"]
    tag = one["android"]["notification"]["tag"]
    assert "collapse_key" not in one["android"]
    assert again["android"]["notification"]["tag"] == tag
    assert other["android"]["notification"]["tag"] != tag
    assert one["apns"]["headers"]["apns-collapse-id"] == tag
    assert again["apns"]["headers"]["apns-collapse-id"] == tag


def test_fcm_long_collapse_key_tag_is_kept_and_apns_override_is_shortened():
    m = fcm.message(task(collapse_key="k" * 100))["message"]
    assert m["android"]["notification"]["tag"] == "k" * 100
    assert len(m["apns"]["headers"]["apns-collapse-id"].encode()) <= 64


def test_fcm_message_critical_plays_sound_on_ios():
    assert fcm.message(task(priority="critical"))["message"]["apns"]["payload"] == {
        "aps": {"sound": "default"}}


@pytest.mark.parametrize(("status", "code", "headers", "want", "after"), [
    (404, "UNREGISTERED", {}, "invalid_target", None),
    (403, "SENDER_ID_MISMATCH", {}, "invalid_target", None),
    (400, "INVALID_ARGUMENT", {}, "failed", None),
    (401, "THIRD_PARTY_AUTH_ERROR", {}, "failed", None),
    (429, "QUOTA_EXCEEDED", {}, "retry", 60.0),
    (429, "QUOTA_EXCEEDED", {"retry-after": "90"}, "retry", 90.0),
    (503, "UNAVAILABLE", {"retry-after": "5"}, "retry", 5.0),
    (500, "INTERNAL", {}, "retry", None),
    (502, None, {}, "retry", None),
])
def test_fcm_classify_uses_error_code(status, code, headers, want, after):
    r = fcm.classify(task(), HttpResp(status, headers, fcm_error(status, code)))
    assert (r.status, r.retry_after) == (want, after)


def test_fcm_classify_error_code_wins_over_http_status():
    # UNREGISTERED is documented as 404, but the code decides whatever the status says
    r = fcm.classify(task(), HttpResp(400, {}, fcm_error(400, "UNREGISTERED")))
    assert r.status == "invalid_target" and "UNREGISTERED" in r.reason


def test_fcm_classify_success_keeps_message_name():
    r = fcm.classify(task(), HttpResp(200, {}, b'{"name":"projects/p1/messages/42"}'))
    assert (r.status, r.provider_ref) == ("sent", "projects/p1/messages/42")


def test_fcm_classify_connection_error_is_retry():
    assert fcm.classify(task(), HttpResp(0, {}, b"", "Connection refused")).status == "retry"


def test_fcm_send_rejects_oversized_payload_before_network():
    class NoNetwork:
        def send(self, reqs):
            raise AssertionError("must not send")

    r = fcm.send(NoNetwork(), [task(data={"blob": "x" * 4100})], CFG)
    assert r[0].status == "failed" and "4096" in r[0].reason


def test_fcm_payload_bytes_counts_notification_and_data_only():
    small = fcm.payload_bytes(task(data=None, title="", body=""))
    assert small < 10
    assert fcm.payload_bytes(task(data={"k": "v" * 100})) > 100
