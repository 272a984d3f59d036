"""SES v2, Mailgun and Vonage: request building and classification on canned answers."""

from datetime import UTC, datetime
from urllib.parse import parse_qs

import orjson
import pytest

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import email_mailgun, email_ses, sms_vonage
from sinks.push_transport import HttpResp

CFG = Settings()
AWS_KEY, AWS_SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
T0 = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)


def task(**kw) -> DeliveryTask:
    base = dict(notification_id="n1", user_id="u1", type="social.like", priority="high",
                channel="email", provider="ses", target_id="email", address="u1@x.io",
                title="T", body="B", template=None, data={"photo": 9}, collapse_key=None,
                created_ms=1_000_000)
    base.update(kw)
    return DeliveryTask(**base)


# --- SES ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "headers", "service", "sig"), [
    # AWS SigV4 test suite "get-vanilla" and the IAM ListUsers example of the AWS docs
    ("https://example.amazonaws.com/", {}, "service",
     "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
     {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, "iam",
     "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"),
])
def test_sigv4_matches_aws_test_vectors(url, headers, service, sig):
    h = email_ses.sigv4("GET", url, headers, b"", region="us-east-1", service=service,
                        access_key_id=AWS_KEY, secret_access_key=AWS_SECRET, now=T0)
    assert h["x-amz-date"] == "20150830T123600Z"
    assert h["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/{service}/aws4_request, ")
    assert h["authorization"].endswith(f"Signature={sig}")


def test_ses_build_request_signs_json_body_with_nid_tag():
    req = email_ses.build_request(task(notification_id="n-1"), CFG, now=T0)
    h = dict(req.headers)
    assert req.url == CFG.ses_url + "/v2/email/outbound-emails"
    assert h["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIASANDBOX/20150830/"
                                         f"{CFG.ses_region}/ses/aws4_request")
    assert "SignedHeaders=content-type;host;x-amz-date," in h["authorization"]
    assert h["host"] == "127.0.0.1:8601"
    body = orjson.loads(req.body)
    assert body["Destination"] == {"ToAddresses": ["u1@x.io"]}
    assert body["Content"]["Simple"]["Subject"]["Data"] == "T"
    assert body["Content"]["Simple"]["Body"]["Text"]["Data"] == "B"
    assert body["EmailTags"] == [{"Name": "nid", "Value": "n-1"}]
    # a different body signs differently
    other = email_ses.build_request(task(body="C"), CFG, now=T0)
    assert dict(other.headers)["authorization"] != h["authorization"]


def test_ses_template_and_tag_sanitised():
    body = orjson.loads(email_ses.build_request(
        task(template="welcome", notification_id="a:b/c"), CFG).body)
    assert body["Content"] == {"Template": {"TemplateName": "welcome",
                                            "TemplateData": '{"photo":9}'}}
    assert body["EmailTags"][0]["Value"] == "a_b_c"


def ses_err(status: int, etype: str, msg: str = "m", **headers) -> HttpResp:
    return HttpResp(status, {"x-amzn-errortype": etype, **headers},
                    orjson.dumps({"message": msg}))


@pytest.mark.parametrize(("resp", "want", "after"), [
    (HttpResp(200, {}, b'{"MessageId":"m-1"}'), "sent", None),
    (ses_err(400, "MessageRejected"), "failed", None),
    (ses_err(400, "MessageRejected:http://internal.amazon.com/coral/com.amazon.ses/"), "failed",
     None),
    (ses_err(400, "BadRequestException"), "failed", None),
    (ses_err(403, "InvalidSignatureException"), "failed", None),
    (ses_err(429, "TooManyRequestsException"), "retry", None),
    (ses_err(429, "TooManyRequestsException", "Daily message quota exceeded."), "retry", 600.0),
    (ses_err(400, "LimitExceededException"), "retry", 600.0),
    (ses_err(400, "LimitExceededException", **{"retry-after": "30"}), "retry", 30.0),
    (ses_err(400, "SendingPausedException"), "retry", 600.0),
    (ses_err(400, "AccountSuspendedException"), "retry", 600.0),
    (ses_err(500, "InternalFailure"), "retry", None),
    (HttpResp(503, {}, b"<html>"), "retry", None),
    (HttpResp(0, {}, b"", "ConnectTimeout"), "retry", None),
])
def test_ses_classify(resp, want, after):
    r = email_ses.classify(task(), resp)
    assert (r.status, r.retry_after) == (want, after)
    if want == "sent":
        assert r.provider_ref == "m-1"


# --- Mailgun ------------------------------------------------------------------------------
def test_mailgun_build_request_is_multipart_with_basic_auth_and_nid():
    req = email_mailgun.build_request(task(notification_id="n-7"), CFG)
    h = dict(req.headers)
    assert req.url == f"{CFG.mailgun_url}/v3/{CFG.mailgun_domain}/messages"
    assert h["authorization"] == "Basic YXBpOmtleS1zYW5kYm94"  # api:key-sandbox
    assert h["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="v:nid"\r\n\r\nn-7\r\n' in req.body and b'name="to"\r\n\r\nu1@x.io' in req.body
    assert ("text", "B") in email_mailgun.fields(task(), CFG)
    tf = dict(email_mailgun.fields(task(template="welcome"), CFG))
    assert tf["template"] == "welcome" and tf["t:variables"] == '{"photo":9}'


@pytest.mark.parametrize(("resp", "want", "after"), [
    (HttpResp(200, {}, b'{"id":"<1@mg>","message":"Queued. Thank you."}'), "sent", None),
    (HttpResp(400, {}, b'{"message":"to parameter is not a valid address."}'), "failed", None),
    (HttpResp(401, {}, b"Forbidden"), "failed", None),
    (HttpResp(429, {"retry-after": "5"}, b'{"message":"Too many requests"}'), "retry", 5.0),
    (HttpResp(500, {}, b'{"message":"Internal Server Error"}'), "retry", None),
    (HttpResp(0, {}, b"", "ConnectError"), "retry", None),
])
def test_mailgun_classify(resp, want, after):
    r = email_mailgun.classify(task(provider="mailgun"), resp)
    assert (r.status, r.retry_after) == (want, after)
    if resp.status == 401:
        assert "credentials/account" in r.reason


# --- Vonage -------------------------------------------------------------------------------
def test_vonage_build_request_strips_plus_and_sets_client_ref():
    req = sms_vonage.build_request(task(channel="sms", provider="vonage", address="+15551112222",
                                        notification_id="n-9"), CFG)
    form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
    assert req.url == f"{CFG.vonage_url}/sms/json"
    assert form["to"] == "15551112222" and form["from"] == "15550000000"
    assert form["client-ref"] == "n-9" and form["text"] == "T: B"
    assert form["api_key"] == "sandbox" and form["api_secret"] == "sandbox"


def vonage(status: str, text: str = "") -> HttpResp:
    m = {"to": "1555", "status": status}
    if status == "0":
        m["message-id"] = "ID1"
    else:
        m["error-text"] = text
    return HttpResp(200, {}, orjson.dumps({"message-count": "1", "messages": [m]}))


@pytest.mark.parametrize(("resp", "want", "account"), [
    (vonage("0"), "sent", False),
    (vonage("1", "Throttled"), "retry", False),
    (vonage("5", "Internal Error"), "retry", False),
    *[(vonage(s, "x"), "failed", False) for s in ("2", "3", "6", "7", "9", "12", "15")],
    (vonage("4", "Bad Credentials"), "failed", True),
    (vonage("8", "Partner Account Barred"), "failed", True),
    (HttpResp(503, {}, b""), "retry", False),
    (HttpResp(0, {}, b"", "ReadTimeout"), "retry", False),
])
def test_vonage_classify_reads_status_in_body(resp, want, account):
    r = sms_vonage.classify(task(channel="sms", provider="vonage"), resp)
    assert r.status == want
    assert ("credentials/account" in r.reason) == account
    if want == "sent":
        assert r.provider_ref == "ID1"


def test_vonage_multipart_message_sent_only_if_every_part_ok():
    body = {"message-count": "2", "messages": [
        {"status": "0", "message-id": "A"}, {"status": "1", "error-text": "Throttled"}]}
    r = sms_vonage.classify(task(), HttpResp(200, {}, orjson.dumps(body)))
    assert r.status == "retry"
