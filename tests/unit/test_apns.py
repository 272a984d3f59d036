"""APNs request building and classification, from Apple's documented answers (no network)."""

import re
import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from notiflow.config import Settings
from schemas.task import DeliveryTask, collapse_identity
from sinks import apns
from sinks.push_transport import HttpResp

CFG = Settings(apns_url="http://apns.test")


def task(**kw) -> DeliveryTask:
    base = dict(notification_id="n1", user_id="u1", type="social.like", priority="high",
                channel="push", provider="apns", target_id="phone", address="ab" * 32,
                title="T", body="B", template=None, data={"photo": 9}, collapse_key="like:9",
                created_ms=1_000_000, expires_ms=4_600_000)
    base.update(kw)
    return DeliveryTask(**base)


def test_apns_build_request_sets_url_and_headers():
    req = apns.build_request(task(), CFG)
    h = dict(req.headers)
    assert req.method == "POST" and req.url == "http://apns.test/3/device/" + "ab" * 32
    assert h["authorization"] == "bearer sandbox-jwt" and h["apns-topic"] == CFG.apns_topic
    assert h["apns-push-type"] == "alert" and h["apns-priority"] == "10"
    assert h["apns-collapse-id"] == "like:9" and h["apns-expiration"] == "4600"


@pytest.mark.parametrize(("priority", "want"), [("critical", "10"), ("high", "10"),
                                                ("normal", "5"), ("low", "5")])
def test_apns_build_request_priority_10_only_for_urgent(priority, want):
    assert dict(apns.build_request(task(priority=priority), CFG).headers)["apns-priority"] == want


def collapse(**kw) -> str:
    return dict(apns.build_request(task(**kw), CFG).headers)["apns-collapse-id"]


def test_apns_build_request_without_expiry_or_collapse_key_still_has_a_collapse_id():
    h = dict(apns.build_request(task(expires_ms=0, collapse_key=None), CFG).headers)
    assert h["apns-expiration"] == "0" and h["apns-collapse-id"] == collapse_identity(
        task(collapse_key=None))


def test_apns_collapse_id_without_collapse_key_is_one_per_notification_and_user():
    """A re-send (same notification, same user, any attempt or device) carries the same
    collapse id, so the device replaces it; another notification or user never does."""
    first = collapse(collapse_key=None)
    assert collapse(collapse_key=None, attempt=4, target_id="tablet", address="cd" * 32) == first
    assert collapse(collapse_key=None, notification_id="n2") != first
    assert collapse(collapse_key=None, user_id="u2") != first
    assert collapse(collapse_key=None, user_id="u1n", notification_id="1") != first
    assert re.fullmatch(r"[!-~]{1,64}", first)  # printable ASCII: a safe header value


def test_apns_collapse_id_of_a_request_collapse_key_is_shared_by_its_notifications():
    """The product's "replace the previous one" (and a bundle, whose task keeps the
    collapse key) keeps its identity across notification ids."""
    assert collapse(notification_id="n1") == collapse(notification_id="b-77") == "like:9"


@given(st.text(min_size=1, max_size=64), st.text(min_size=1, max_size=264))
def test_apns_collapse_id_is_always_a_safe_header_within_64_bytes(user, nid):
    cid = collapse(collapse_key=None, user_id=user, notification_id=nid)
    assert len(cid.encode()) <= 64 and "\r" not in cid and "\n" not in cid


def test_apns_id_is_uuid5_of_notification_and_token():
    want = str(uuid.uuid5(apns.ID_NAMESPACE, "n1/phone"))
    assert apns.apns_id(task()) == want
    assert apns.apns_id(task(attempt=3)) == want  # a resend is recognisable
    assert apns.apns_id(task(target_id="tablet")) != want
    assert uuid.UUID(want).version == 5


def test_apns_collapse_id_over_64_bytes_is_shortened_stably():
    long = "k" * 100
    h1 = dict(apns.build_request(task(collapse_key=long), CFG).headers)["apns-collapse-id"]
    h2 = dict(apns.build_request(task(collapse_key=long, notification_id="n2"), CFG).headers)
    assert len(h1.encode()) <= 64 and h1 == h2["apns-collapse-id"]


def test_apns_payload_has_alert_nid_and_custom_data():
    body = orjson.loads(apns.build_request(task(), CFG).body)
    assert body["aps"]["alert"] == {"title": "T", "body": "B"} and "sound" not in body["aps"]
    assert body["nid"] == "n1" and body["photo"] == 9


def test_apns_payload_critical_has_sound_and_data_cannot_replace_aps():
    body = orjson.loads(apns.payload(task(priority="critical", data={"aps": 1, "nid": "x"})))
    assert body["aps"]["sound"] == "default" and body["nid"] == "n1"


@pytest.mark.parametrize(("status", "body", "headers", "want", "after"), [
    (200, b"", {"apns-id": "x"}, "sent", None),
    (400, b'{"reason":"BadDeviceToken"}', {}, "invalid_target", None),
    (410, b'{"reason":"Unregistered","timestamp":1}', {}, "invalid_target", None),
    (400, b'{"reason":"DeviceTokenNotForTopic"}', {}, "failed", None),
    (400, b'{"reason":"BadCollapseId"}', {}, "failed", None),
    (400, b'{"reason":"MissingTopic"}', {}, "failed", None),
    (403, b'{"reason":"InvalidProviderToken"}', {}, "failed", None),
    (403, b'{"reason":"ExpiredProviderToken"}', {}, "retry", None),
    (413, b'{"reason":"PayloadTooLarge"}', {}, "failed", None),
    (429, b'{"reason":"TooManyRequests"}', {"retry-after": "7"}, "retry", 7.0),
    (500, b'{"reason":"InternalServerError"}', {}, "retry", None),
    (503, b'{"reason":"ServiceUnavailable"}', {"retry-after": "30"}, "retry", 30.0),
    (502, b"<html>bad gateway</html>", {}, "retry", None),
])
def test_apns_classify_follows_apple_table(status, body, headers, want, after):
    r = apns.classify(task(), HttpResp(status, headers, body))
    assert (r.status, r.retry_after) == (want, after)


def test_apns_classify_keeps_apns_id_and_reason():
    assert apns.classify(task(), HttpResp(200, {"apns-id": "abc"})).provider_ref == "abc"
    r = apns.classify(task(), HttpResp(400, {}, b'{"reason":"BadTopic"}'))
    assert r.reason == "apns 400 BadTopic"


def test_apns_classify_connection_error_is_retry():
    r = apns.classify(task(), HttpResp(0, {}, b"", "Operation timed out"))
    assert r.status == "retry" and "timed out" in r.reason


class NoNetwork:
    def send(self, reqs):
        raise AssertionError("must not send")


class Echo:
    """Answers 200 to every request, recording them (a transport without a network)."""

    def __init__(self) -> None:
        self.seen: list = []

    def send(self, reqs):
        self.seen += reqs
        return [HttpResp(200, {"apns-id": dict(r.headers)["apns-id"]}) for r in reqs]


def test_apns_send_rejects_oversized_payload_before_network():
    r = apns.send(NoNetwork(), [task(body="x" * 5000)], CFG)
    assert r[0].status == "failed" and "4096" in r[0].reason


def test_apns_send_keeps_task_order_around_rejected_ones():
    tasks = [task(notification_id="a"), task(notification_id="b", body="x" * 5000),
             task(notification_id="c", address="")]
    tasks.append(task(notification_id="d"))
    echo = Echo()
    got = apns.send(echo, tasks, CFG)
    assert [r.task.notification_id for r in got] == ["a", "b", "c", "d"]
    assert [r.status for r in got] == ["sent", "failed", "failed", "sent"]
    assert len(echo.seen) == 2
