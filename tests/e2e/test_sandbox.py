"""The provider sandbox, started as `python -m sandbox`, answers real clients (libcurl over
h2c, httpx over h2c, the sendgrid and twilio libraries over HTTP/1.1) on one port, with each
provider's own success and error shapes, injected faults and a read-back control API."""

from __future__ import annotations

import io
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pycurl
import pytest
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client as TwilioClient

from notiflow.config import Settings
from sandbox.client import SandboxControl
from schemas.task import DeliveryTask
from sinks import apns, fcm
from sinks.push_transport import CurlTransport

ROOT = Path(__file__).resolve().parents[2]
APNS_HEADERS = {"authorization": "bearer jwt", "apns-topic": "com.example.app",
                "apns-push-type": "alert"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline, seen = time.monotonic() + 30, b""
        while b"sandbox ready" not in seen:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox did not start: {seen.decode(errors='replace')}")
            if sel.select(timeout=0.2):
                seen += proc.stdout.read1(4096)
        sel.close()
        assert f"sandbox ready http://127.0.0.1:{port}".encode() in seen
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def sb(sandbox_url: str) -> Iterator[SandboxControl]:
    with SandboxControl(sandbox_url) as c:
        c.reset()
        yield c


def curl_apns(url: str, token: str, payload: dict, headers: dict[str, str] | None = None
              ) -> tuple[int, str, dict[str, str], bytes]:
    """One APNs request via libcurl, HTTP/2 with prior knowledge (what our push sink uses)."""
    out, hdrs = io.BytesIO(), {}

    def header(line: bytes) -> None:
        k, sep, v = line.decode().partition(":")
        if sep:
            hdrs[k.strip().lower()] = v.strip()

    c = pycurl.Curl()
    try:
        c.setopt(pycurl.URL, f"{url}/3/device/{token}")
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE)
        c.setopt(pycurl.POSTFIELDS, orjson.dumps(payload))
        c.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in (headers or APNS_HEADERS).items()])
        c.setopt(pycurl.WRITEDATA, out)
        c.setopt(pycurl.HEADERFUNCTION, header)
        c.perform()
        version = "2" if c.getinfo(pycurl.INFO_HTTP_VERSION) == pycurl.CURL_HTTP_VERSION_2 else "1"
        return c.getinfo(pycurl.RESPONSE_CODE), version, hdrs, out.getvalue()
    finally:
        c.close()


def sg_mail(n: int, nid: str) -> dict:
    return {"personalizations": [{"to": [{"email": f"u{i}@example.com"}],
                                  "custom_args": {"nid": nid}} for i in range(n)],
            "from": {"email": "noreply@example.com"}, "subject": "Hello",
            "content": [{"type": "text/plain", "value": "Body"}]}


def twilio_client(url: str) -> TwilioClient:
    c = TwilioClient("ACsandbox", "secret")
    c.api.base_url = url  # twilio 9.x: every request of the Api domain goes to this base
    return c


def test_sandbox_apns_accepts_over_h2c_and_records_nid(sandbox_url, sb):
    payload = {"aps": {"alert": {"title": "Hi", "body": "There"}}, "nid": "n-apns-1"}
    hdrs = {**APNS_HEADERS, "apns-id": "6f3c0a4e-0000-4000-8000-000000000001",
            "apns-collapse-id": "c1", "apns-priority": "10"}
    status, version, headers, body = curl_apns(sandbox_url, "abc123", payload, hdrs)
    assert (status, version, body) == (200, "2", b"")
    assert headers["apns-id"] == hdrs["apns-id"]
    status, _, headers, _ = curl_apns(sandbox_url, "abc123", payload)
    assert status == 200 and len(headers["apns-id"]) == 36  # a fresh uuid4
    first = sb.messages("apns")[0]
    assert {k: first[k] for k in ("provider", "target", "nid", "title", "body", "collapse_id",
                                  "priority")} == {
        "provider": "apns", "target": "abc123", "nid": "n-apns-1", "title": "Hi",
        "body": "There", "collapse_id": "c1", "priority": "10"}


def test_sandbox_apns_rejects_bad_and_gone_tokens(sandbox_url, sb):
    status, _, _, body = curl_apns(sandbox_url, "bad-1", {"aps": {}})
    assert (status, orjson.loads(body)) == (400, {"reason": "BadDeviceToken"})
    status, _, _, body = curl_apns(sandbox_url, "gone-1", {"aps": {}})
    err = orjson.loads(body)
    assert status == 410 and err["reason"] == "Unregistered" and isinstance(err["timestamp"], int)
    assert sb.messages("apns") == []


@pytest.mark.parametrize(("change", "payload", "status", "reason"), [
    ({"authorization": None}, {"aps": {}}, 403, "MissingProviderToken"),
    ({"authorization": "basic x"}, {"aps": {}}, 403, "InvalidProviderToken"),
    ({"apns-topic": None}, {"aps": {}}, 400, "MissingTopic"),
    ({"apns-push-type": "shout"}, {"aps": {}}, 400, "InvalidPushType"),
    ({"apns-priority": "7"}, {"aps": {}}, 400, "BadPriority"),
    ({"apns-collapse-id": "x" * 65}, {"aps": {}}, 400, "BadCollapseId"),
    ({}, {"nid": "n"}, 400, "PayloadEmpty"),
    ({}, {"aps": {}, "pad": "y" * 4100}, 413, "PayloadTooLarge"),
])
def test_sandbox_apns_validates_headers_and_payload(sandbox_url, sb, change, payload, status,
                                                    reason):
    headers = {k: v for k, v in {**APNS_HEADERS, **change}.items() if v is not None}
    got, _, _, body = curl_apns(sandbox_url, "tok", payload, headers)
    assert (got, orjson.loads(body)["reason"]) == (status, reason)


def test_sandbox_fcm_over_h2c_accepts_and_reports_unregistered(sandbox_url, sb):
    url = f"{sandbox_url}/v1/projects/demo/messages:send"
    with httpx.Client(http1=False, http2=True) as h:
        ok = h.post(url, headers={"authorization": "Bearer oauth"}, json={"message": {
            "token": "tok-1", "notification": {"title": "T", "body": "B"},
            "data": {"nid": "n-fcm-1"}, "android": {"collapse_key": "ck", "priority": "high",
                                                    "notification": {"tag": "tag-1"}}}})
        assert ok.http_version == "HTTP/2" and ok.status_code == 200
        assert ok.json()["name"].startswith("projects/demo/messages/")
        gone = h.post(url, headers={"authorization": "Bearer oauth"},
                      json={"message": {"token": "gone-9"}})
        assert gone.status_code == 404
        assert gone.json() == {"error": {
            "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                         "errorCode": "UNREGISTERED"}]}}
        bad = h.post(url, headers={"authorization": "Bearer oauth"},
                     json={"message": {"token": "bad-1"}})
        assert bad.json()["error"]["details"][0]["errorCode"] == "INVALID_ARGUMENT"
        assert h.post(url, json={"message": {"token": "t"}}).json()["error"]["status"] == \
            "UNAUTHENTICATED"
    [m] = sb.messages("fcm")
    # the device replaces by the notification tag; collapse_key only collapses offline storage
    assert (m["target"], m["nid"], m["title"], m["collapse_id"]) == ("tok-1", "n-fcm-1", "T",
                                                                      "tag-1")


def test_sandbox_sendgrid_library_gets_202_and_personalization_limit(sandbox_url, sb):
    sg = SendGridAPIClient("SG.sandbox", host=sandbox_url)
    assert sg.send(sg_mail(3, "n-sg-1")).status_code == 202
    assert [(m["target"], m["nid"]) for m in sb.messages("sendgrid")] == [
        (f"u{i}@example.com", "n-sg-1") for i in range(3)]
    with pytest.raises(SendGridHTTPError) as e:
        sg.send(sg_mail(1001, "n-sg-2"))
    assert e.value.status_code == 400
    assert orjson.loads(e.value.body)["errors"][0]["field"] == "personalizations"
    with pytest.raises(SendGridHTTPError) as e:
        SendGridAPIClient("not-a-key", host=sandbox_url).send(sg_mail(1, "x"))
    assert e.value.status_code == 401


def test_sandbox_twilio_library_gets_201_and_magic_number_errors(sandbox_url, sb):
    tw = twilio_client(sandbox_url)
    m = tw.messages.create(to="+15551230001", from_="+15005550006", body="code 1234",
                           status_callback="https://hooks.example.com/tw?nid=n-tw-1")
    assert m.sid.startswith("SM") and len(m.sid) == 34
    assert (m.status, m.to, m.error_code) == ("queued", "+15551230001", None)
    for number, code in (("+15005550001", 21211), ("+15005550009", 21614),
                         ("+15005550004", 21610), ("555-1234", 21211)):
        with pytest.raises(TwilioRestException) as e:
            tw.messages.create(to=number, from_="+15005550006", body="x")
        assert (e.value.status, e.value.code) == (400, code)
    assert [(x["target"], x["nid"], x["body"]) for x in sb.messages("twilio")] == [
        ("+15551230001", "n-tw-1", "code 1234")]


def test_sandbox_twilio_requires_basic_auth(sandbox_url, sb):
    r = httpx.post(f"{sandbox_url}/2010-04-01/Accounts/ACx/Messages.json",
                   data={"To": "+15551230001", "From": "+15005550006", "Body": "x"})
    assert (r.status_code, r.json()["code"]) == (401, 20003)


def test_sandbox_faults_fail_exactly_count_requests_with_provider_shapes(sandbox_url, sb):
    sb.faults("apns", rate=1, status=429, count=2, retry_after=5)
    got = [curl_apns(sandbox_url, "tok", {"aps": {}, "nid": f"f{i}"}) for i in range(3)]
    assert [g[0] for g in got] == [429, 429, 200]
    assert orjson.loads(got[0][3]) == {"reason": "TooManyRequests"}
    assert got[0][2]["retry-after"] == "5"
    assert [m["nid"] for m in sb.messages("apns")] == ["f2"]

    sb.faults("fcm", rate=1, status=503)
    with httpx.Client(http1=False, http2=True) as h:
        r = h.post(f"{sandbox_url}/v1/projects/p/messages:send",
                   headers={"authorization": "Bearer o"}, json={"message": {"token": "t"}})
    assert r.status_code == 503
    assert r.json()["error"]["details"][0]["errorCode"] == "UNAVAILABLE"

    sb.faults("sendgrid", rate=1, status=429, retry_after=2)
    with pytest.raises(SendGridHTTPError) as e:
        SendGridAPIClient("SG.sandbox", host=sandbox_url).send(sg_mail(1, "x"))
    assert e.value.status_code == 429
    assert e.value.headers["X-RateLimit-Remaining"] == "0"
    assert int(e.value.headers["X-RateLimit-Reset"]) > time.time() - 60

    sb.faults("twilio", rate=1, status=429)
    with pytest.raises(TwilioRestException) as te:
        twilio_client(sandbox_url).messages.create(to="+15551230001", from_="+1500555006",
                                                   body="x")
    assert (te.value.status, te.value.code) == (429, 20429)

    sb.clear_faults()
    assert curl_apns(sandbox_url, "tok", {"aps": {}})[0] == 200


def test_sandbox_latency_only_fault_fails_nothing(sandbox_url, sb):
    sb.faults("apns", latency_ms=5)
    assert [curl_apns(sandbox_url, "tok", {"aps": {}})[0] for _ in range(3)] == [200] * 3


def test_sandbox_rejects_a_malformed_fault_spec(sandbox_url, sb):
    with pytest.raises(ValueError):
        sb.faults("carrier-pigeon", rate=1)
    with pytest.raises(ValueError):
        sb.faults("apns", rate=2)


def test_sandbox_stats_and_messages_read_back_and_reset(sandbox_url, sb):
    for tok in ("a", "b", "bad-c", "gone-d"):
        curl_apns(sandbox_url, tok, {"aps": {"alert": "x"}, "nid": tok})
    st = sb.stats()
    assert st["apns"] == {"accepted": 2, "rejected": 2,
                          "by_status": {"200": 2, "400": 1, "410": 1}}
    assert st["fcm"] == {"accepted": 0, "rejected": 0, "by_status": {}}
    page = httpx.get(f"{sandbox_url}/_sandbox/messages",
                     params={"provider": "apns", "offset": 1, "limit": 5}).json()
    assert [m["nid"] for m in page["messages"]] == ["b"] and page["next"] == 2
    assert [m["nid"] for m in sb.messages()] == ["a", "b"]
    sb.reset()
    assert sb.messages() == [] and sb.stats()["apns"]["by_status"] == {}


# --- the device model: what a person would see ------------------------------------------
def test_sandbox_visible_counts_a_resend_without_collapse_id_as_seen_twice(sandbox_url, sb):
    """A device shows every notification without identity: the same nid twice is a visible
    duplicate; with an apns-collapse-id the second replaces the first."""
    for _ in range(2):
        curl_apns(sandbox_url, "tok-a", {"aps": {"alert": "x"}, "nid": "plain"})
        curl_apns(sandbox_url, "tok-a", {"aps": {"alert": "x"}, "nid": "keyed"},
                  {**APNS_HEADERS, "apns-collapse-id": "k-1"})
    assert sb.visible() == {"devices": 1, "shown": 3, "visible_duplicates": 1,
                            "transport_duplicates": 2}


def test_sandbox_visible_through_the_apns_and_fcm_sinks(sandbox_url, sb):
    """The sinks' own requests (libcurl over h2c), each sent twice: two transport
    duplicates a provider, no visible one: the collapse identity replaces the first."""
    cfg = Settings(apns_url=sandbox_url, fcm_url=sandbox_url)

    def task(provider: str, nid: str, address: str, collapse_key: str | None) -> DeliveryTask:
        return DeliveryTask(notification_id=nid, user_id="u1", type="social.like",
                            priority="high", channel="push", provider=provider,
                            target_id="phone", address=address, title="T", body="B",
                            template=None, data=None, collapse_key=collapse_key,
                            created_ms=int(time.time() * 1000))

    ios = [task("apns", "n1", "ab" * 32, None), task("apns", "n2", "ab" * 32, "like:9")]
    android = [task("fcm", "n1", "tok-and", None), task("fcm", "n2", "tok-and", "like:9")]
    t = CurlTransport(5)
    try:
        for _ in range(2):
            assert {r.status for r in apns.send(t, ios, cfg)} == {"sent"}
            assert {r.status for r in fcm.send(t, android, cfg)} == {"sent"}
    finally:
        t.close()
    want = {"devices": 1, "shown": 2, "visible_duplicates": 0, "transport_duplicates": 2}
    assert sb.visible("apns") == want and sb.visible("fcm") == want
    assert sb.visible()["transport_duplicates"] == 4
    assert sb.visible(target_prefix="tok-and")["devices"] == 1


def test_sandbox_visible_rejects_an_unknown_provider_and_reset_clears_it(sandbox_url, sb):
    curl_apns(sandbox_url, "tok", {"aps": {}, "nid": "n"})
    curl_apns(sandbox_url, "tok", {"aps": {}, "nid": "n"})
    assert sb.visible("apns")["visible_duplicates"] == 1
    r = httpx.get(f"{sandbox_url}/_sandbox/visible", params={"provider": "pigeon"})
    assert r.status_code == 400
    sb.reset()
    assert sb.visible() == {"devices": 0, "shown": 0, "visible_duplicates": 0,
                            "transport_duplicates": 0}
