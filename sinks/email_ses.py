"""Amazon SES v2 SendEmail (``POST /v2/email/outbound-emails``) over httpx, SigV4-signed.

No boto3: the signature is AWS Signature Version 4 computed with hashlib/hmac (``sigv4``).
One request per task (one recipient), the notification id rides in ``EmailTags`` as ``nid``.
SES has no idempotency key: a retry after a timeout can send the mail twice.
Errors: ``x-amzn-ErrorType`` header (``Type`` or ``Type:uri``) + JSON ``{"message": ...}``;
see the provider's API documentation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import httpx
import orjson

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import http_send, no_answer
from sinks import results as R
from sinks.push_transport import HttpReq, HttpResp

PATH = "/v2/email/outbound-emails"
SERVICE = "ses"
RETRY_TYPES = {"TooManyRequestsException", "LimitExceededException", "ThrottlingException",
               "InternalFailure", "ServiceUnavailable"}
# the account cannot send for now: retry later (provider-wide), not fail the message
PAUSED_TYPES = {"AccountSuspendedException", "SendingPausedException"}
QUOTA_RETRY_S = 600.0  # over quota SES drops the message; AWS suggests waiting up to 10 min
_TAG_BAD = re.compile(r"[^A-Za-z0-9_\-]")  # EmailTags values: ASCII letters, digits, _ and -


def make_client(cfg: Settings) -> httpx.Client:
    return http_send.make_client(cfg.failover_timeout_s)


def _h(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4(method: str, url: str, headers: dict[str, str], body: bytes, *, region: str,
          service: str, access_key_id: str, secret_access_key: str,
          now: datetime) -> dict[str, str]:
    """``headers`` plus ``host``, ``x-amz-date`` and the SigV4 ``authorization`` header.

    Every header passed in is signed. Path segments are URI-encoded once (non-S3 services
    encode them twice, which changes nothing for unreserved-only paths like SES's).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port and (parts.scheme, parts.port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{parts.port}"
    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    h = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    h["host"] = host
    h["x-amz-date"] = amz_date
    names = sorted(h)
    signed = ";".join(names)
    query = "&".join(sorted(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)))
    canonical = "\n".join([
        method.upper(), quote(parts.path or "/", safe="/-_.~"), query,
        "".join(f"{k}:{h[k]}\n" for k in names), signed, hashlib.sha256(body).hexdigest()])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _h(_h(_h(_h(("AWS4" + secret_access_key).encode(), day), region), service),
             "aws4_request")
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, "
                          f"SignedHeaders={signed}, Signature={sig}")
    return h


def message(t: DeliveryTask, cfg: Settings) -> dict:
    if t.template:
        content: dict = {"Template": {"TemplateName": t.template,
                                      "TemplateData": orjson.dumps(t.data or {}).decode()}}
    else:
        content = {"Simple": {"Subject": {"Data": t.title or t.type, "Charset": "UTF-8"},
                              "Body": {"Text": {"Data": t.body or "", "Charset": "UTF-8"}}}}
    return {"FromEmailAddress": cfg.email_from, "Destination": {"ToAddresses": [t.address]},
            "Content": content,
            "EmailTags": [{"Name": "nid", "Value": _TAG_BAD.sub("_", t.notification_id)[:256]}]}


def build_request(t: DeliveryTask, cfg: Settings, now: datetime | None = None) -> HttpReq:
    url = cfg.ses_url.rstrip("/") + PATH
    body = orjson.dumps(message(t, cfg))
    h = sigv4("POST", url, {"content-type": "application/json"}, body, region=cfg.ses_region,
              service=SERVICE, access_key_id=cfg.ses_access_key_id,
              secret_access_key=cfg.ses_secret_access_key.get_secret_value(),
              now=now or datetime.now(UTC))
    return HttpReq(url, list(h.items()), body)


def error_type(resp: HttpResp) -> tuple[str, str]:
    """(error type, message): header first, then the body's ``__type``/``code``."""
    try:
        doc = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    etype = resp.headers.get("x-amzn-errortype") or doc.get("__type") or doc.get("code") or ""
    etype = str(etype).split(":", 1)[0].rsplit("#", 1)[-1]
    return etype, str(doc.get("message") or doc.get("Message") or "")


def classify(t: DeliveryTask, resp: HttpResp) -> R.SendResult:
    if resp.error is not None:
        return no_answer.result(t, "ses", resp.error)
    early = R.answered_ok(t, resp, "ses", "MessageId")
    if early is not None:
        return early
    etype, msg = error_type(resp)
    text = f"ses {resp.status} {etype or 'error'}: {msg}".strip()
    after = R.parse_retry_after(resp.headers.get("retry-after"))
    if etype in PAUSED_TYPES:
        return R.retry(t, text, after if after is not None else QUOTA_RETRY_S)
    if etype in RETRY_TYPES or resp.status == 429 or resp.status >= 500:
        over_quota = etype == "LimitExceededException" or "quota" in msg.lower()
        return R.retry(t, text, QUOTA_RETRY_S if after is None and over_quota else after)
    return R.failed(t, text)  # MessageRejected, BadRequestException, signature/access errors


def send(client: httpx.Client, tasks: list[DeliveryTask], cfg: Settings) -> list[R.SendResult]:
    return http_send.send_each(client, tasks, "ses", lambda t: build_request(t, cfg),
                               classify)
