"""The provider APIs (APNs, FCM, SendGrid, Twilio, Amazon SES v2, Mailgun, Vonage SMS),
answering with each provider's documented success and error shapes so that real client libraries and our sinks run against them unchanged.

Each handler takes (state, path, headers, body) and returns (status, headers, body). APNs is
on the hot path of the push benchmark: it does the provider's checks with plain header
lookups and one orjson parse, and records one tuple.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from email import policy
from email.parser import BytesParser
from itertools import count
from urllib.parse import parse_qs, urlsplit

import orjson

from sandbox.state import Fault, State

Headers = list[tuple[str, str]]
Resp = tuple[int, Headers, bytes]
JSON: Headers = [("content-type", "application/json")]
_ids = count(1_500_000_000_000_000)


def json_resp(status: int, obj: object, headers: Headers | None = None) -> Resp:
    return status, JSON + headers if headers else JSON, orjson.dumps(obj)


def _retry_after(f: Fault) -> Headers:
    return [("retry-after", str(round(f.retry_after)))] if f.retry_after is not None else []


# --- APNs: POST /3/device/{token} ----------------------------------------------------------
APNS_PUSH_TYPES = frozenset({"alert", "background", "voip", "complication", "fileprovider",
                             "mdm", "location", "liveactivity", "pushtotalk", "widgets",
                             "controls"})
_APNS_PRIORITIES = (None, "1", "5", "10")  # Apple documents 10, 5 and 1
_APNS_FAULT_REASON = {400: "BadRequest", 403: "ExpiredProviderToken", 404: "BadPath",
                      410: "Unregistered", 413: "PayloadTooLarge", 429: "TooManyRequests",
                      500: "InternalServerError", 503: "ServiceUnavailable"}


def _apns_err(apns_id: str, status: int, reason: str, extra: Headers | None = None,
              ts: bool = False) -> Resp:
    body = {"reason": reason, "timestamp": time.time_ns() // 1_000_000} if ts else {"reason": reason}
    hdrs = [("content-type", "application/json"), ("apns-id", apns_id)]
    return status, hdrs + extra if extra else hdrs, orjson.dumps(body)


def apns(st: State, path: str, h, body: bytes) -> Resp:
    token = path[10:]  # len("/3/device/")
    apns_id = h.get("apns-id") or str(uuid.uuid4())
    auth = h.get("authorization")
    if not auth:
        return _apns_err(apns_id, 403, "MissingProviderToken")
    if auth[:7].lower() != "bearer " or len(auth) < 8:
        return _apns_err(apns_id, 403, "InvalidProviderToken")
    f = st.faults.get("apns")
    if f is not None and f.fires():
        reason = f.reason or _APNS_FAULT_REASON.get(f.status, "InternalServerError")
        return _apns_err(apns_id, f.status, reason, _retry_after(f), f.status == 410)
    if not h.get("apns-topic"):
        return _apns_err(apns_id, 400, "MissingTopic")
    if h.get("apns-push-type") not in APNS_PUSH_TYPES:
        return _apns_err(apns_id, 400, "InvalidPushType")
    prio = h.get("apns-priority")
    if prio not in _APNS_PRIORITIES:
        return _apns_err(apns_id, 400, "BadPriority")
    collapse = h.get("apns-collapse-id")
    if collapse is not None and len(collapse.encode()) > 64:
        return _apns_err(apns_id, 400, "BadCollapseId")
    exp = h.get("apns-expiration")
    if exp is not None and not exp.isdigit():
        return _apns_err(apns_id, 400, "BadExpirationDate")
    if len(body) > 4096:
        return _apns_err(apns_id, 413, "PayloadTooLarge")
    if not token or token[:3] == "bad":
        return _apns_err(apns_id, 400, "BadDeviceToken")
    if token[:4] == "gone":
        return _apns_err(apns_id, 410, "Unregistered", ts=True)
    try:
        payload = orjson.loads(body)
        aps = payload["aps"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _apns_err(apns_id, 400, "PayloadEmpty")
    if type(aps) is not dict:
        return _apns_err(apns_id, 400, "PayloadEmpty")
    alert = aps.get("alert")
    if type(alert) is dict:
        title, text = alert.get("title"), alert.get("body")
    else:
        title, text = None, alert
    nid = payload.get("nid")
    st.accept("apns", token, None if nid is None else str(nid), title, text, collapse, prio)
    return 200, [("apns-id", apns_id)], b""


# --- FCM HTTP v1: POST /v1/projects/{project}/messages:send ------------------------------
_FCM_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
               404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_FCM_CODE = {400: "INVALID_ARGUMENT", 401: "THIRD_PARTY_AUTH_ERROR", 403: "SENDER_ID_MISMATCH",
             404: "UNREGISTERED", 429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_FCM_MESSAGE = {429: "Quota exceeded for quota metric 'Requests' of service "
                     "'fcm.googleapis.com'.",
                500: "Internal error encountered.", 503: "The service is currently unavailable."}


def _fcm_err(status: int, message: str, code: str | None = None,
             headers: Headers | None = None) -> Resp:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code or _FCM_CODE.get(status, "INTERNAL")}]
    return json_resp(status, {"error": {"code": status, "message": message,
                                        "status": _FCM_STATUS.get(status, "INTERNAL"),
                                        "details": details}}, headers)


def _fcm_identity(android: dict, apns: object) -> str | None:
    """What the device replaces a shown notification by: Android's ``notification.tag``,
    else (an iOS device reached through FCM) the APNs override's ``apns-collapse-id``.
    ``android.collapse_key`` is not one: it only collapses messages stored for an offline
    device."""
    note = android.get("notification")
    tag = note.get("tag") if type(note) is dict else None
    if tag is not None:
        return str(tag)
    headers = apns.get("headers") if type(apns) is dict else None
    cid = headers.get("apns-collapse-id") if type(headers) is dict else None
    return None if cid is None else str(cid)


def fcm(st: State, path: str, h, body: bytes) -> Resp:
    project, _, rest = path[13:].partition("/")  # len("/v1/projects/")
    if rest != "messages:send" or not project:
        return json_resp(404, {"error": {"code": 404, "message": "Requested entity was not "
                                         "found.", "status": "NOT_FOUND"}})
    auth = h.get("authorization") or ""
    if auth[:7].lower() != "bearer " or len(auth) < 8:
        return json_resp(401, {"error": {
            "code": 401, "status": "UNAUTHENTICATED",
            "message": "Request is missing required authentication credential. Expected OAuth "
                       "2 access token, login cookie or other valid authentication credential."}})
    f = st.faults.get("fcm")
    if f is not None and f.fires():
        msg = f.reason or _FCM_MESSAGE.get(f.status, "Injected failure.")
        return _fcm_err(f.status, msg, None, _retry_after(f))
    if len(body) > 4096 + 1024:  # 4 KB of message payload plus the JSON envelope
        return _fcm_err(400, "Request contains an invalid argument.", "INVALID_ARGUMENT")
    try:
        msg = orjson.loads(body)["message"]
        targets = [k for k in ("token", "topic", "condition") if msg.get(k)]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return _fcm_err(400, "Invalid JSON payload received.")
    if len(targets) != 1:
        return _fcm_err(400, "Exactly one of token, topic or condition must be specified.")
    data = msg.get("data") or {}
    if type(data) is not dict or not all(type(v) is str for v in data.values()):
        return _fcm_err(400, "Invalid value at 'message.data': values must be strings.")
    android = msg.get("android") or {}
    note = msg.get("notification") or {}
    if type(android) is not dict or type(note) is not dict:
        return _fcm_err(400, "Invalid JSON payload received.")
    prio = android.get("priority")
    if prio is not None and str(prio).upper() not in ("NORMAL", "HIGH"):
        return _fcm_err(400, f"Invalid value at 'message.android.priority' ({prio}).")
    token = msg.get("token")
    if token is not None:
        if type(token) is not str or token[:3] == "bad":
            return _fcm_err(400, "The registration token is not a valid FCM registration token",
                            "INVALID_ARGUMENT")
        if token[:4] == "gone":
            return _fcm_err(404, "Requested entity was not found.", "UNREGISTERED")
        target = token
    else:
        target = str(msg[targets[0]])
    st.accept("fcm", target, data.get("nid"), note.get("title"), note.get("body"),
              _fcm_identity(android, msg.get("apns")), prio)
    return json_resp(200, {"name": f"projects/{project}/messages/0:{next(_ids)}%sandbox"})


# --- SendGrid v3: POST /v3/mail/send --------------------------------------------------------
def _sg_err(status: int, message: str, field: str | None = None,
            headers: Headers | None = None) -> Resp:
    return json_resp(status, {"errors": [{"message": message, "field": field, "help": None}]},
                     headers)


def _sg_validate(mail: object) -> Resp | None:
    if type(mail) is not dict:
        return _sg_err(400, "Bad Request", None)
    pers = mail.get("personalizations")
    if type(pers) is not list or not pers:
        return _sg_err(400, "The personalizations field is required and must have at least "
                       "one personalization.", "personalizations")
    if len(pers) > 1000:
        return _sg_err(400, "The personalizations field is limited to 1000 personalizations "
                       "per request.", "personalizations")
    if not isinstance(mail.get("from"), dict) or not mail["from"].get("email"):
        return _sg_err(400, "The from object must be provided for every email send. It is an "
                       "object that requires an email parameter, but may also contain a name "
                       "parameter.", "from")
    has_template = bool(mail.get("template_id"))
    if not has_template and not mail.get("content"):
        return _sg_err(400, "Unless a valid template_id is provided, the content parameter is "
                       "required. There must be at least one defined content block.", "content")
    recipients = 0
    for i, p in enumerate(pers):
        tos = p.get("to") if type(p) is dict else None
        if (type(tos) is not list or not tos
                or not all(type(t) is dict and "@" in str(t.get("email", "")) for t in tos)):
            return _sg_err(400, "The to array is required for all personalization objects, and "
                           "must have at least one email object with a valid email address.",
                           f"personalizations.{i}.to")
        recipients += len(tos) + len(p.get("cc") or ()) + len(p.get("bcc") or ())
        if not has_template and not (p.get("subject") or mail.get("subject")):
            return _sg_err(400, "The subject is required. You can get around this requirement "
                           "if you use a template with a subject defined or if every single "
                           "personalization has a subject defined.", "subject")
    if recipients > 1000:
        return _sg_err(400, "The total number of recipients in to, cc and bcc must be less than "
                       "or equal to 1000.", "personalizations")
    return None


def sendgrid(st: State, path: str, h, body: bytes) -> Resp:
    if path != "/v3/mail/send":
        return _sg_err(404, "not found")
    auth = h.get("authorization")
    if not auth:
        return _sg_err(401, "authorization required")
    if auth[:7].lower() != "bearer " or auth[7:10] != "SG.":  # real keys are SG.<id>.<secret>
        return _sg_err(401, "The provided authorization grant is invalid, expired, or revoked")
    f = st.faults.get("sendgrid")
    if f is not None and f.fires():
        if f.status == 429:
            reset = int(time.time() + (f.retry_after or 1))
            return _sg_err(429, "too many requests", None, [
                ("x-ratelimit-limit", "600"), ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", str(reset))] + _retry_after(f))
        return _sg_err(f.status, f.reason or "Internal Server Error", None, _retry_after(f))
    try:
        mail = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _sg_err(400, "Bad Request", None)
    bad = _sg_validate(mail)
    if bad is not None:
        return bad
    content = mail.get("content") or [{}]
    text = content[0].get("value") if type(content[0]) is dict else None
    for p in mail["personalizations"]:
        nid = (p.get("custom_args") or {}).get("nid") or (mail.get("custom_args") or {}).get("nid")
        subject = p.get("subject") or mail.get("subject")
        for t in p["to"]:
            st.accept("sendgrid", t["email"], nid, subject, text)
    return 202, [], b""


# --- Twilio: POST /2010-04-01/Accounts/{Sid}/Messages.json -------------------------------
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_TWILIO_MAGIC = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550009": (21614, "'To' number +15005550009 is not a valid mobile number"),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
}
_TWILIO_FAULT = {429: (20429, "Too Many Requests"), 500: (20500, "Internal Server Error"),
                 503: (20503, "Service Unavailable")}


def _tw_err(status: int, code: int, message: str, headers: Headers | None = None) -> Resp:
    return json_resp(status, {"code": code, "message": message,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}",
                              "status": status}, headers)


def _basic_ok(auth: str | None) -> bool:
    if not auth or auth[:6].lower() != "basic ":
        return False
    try:
        user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
    except ValueError:
        return False
    return bool(user and pw)


def twilio(st: State, path: str, h, body: bytes) -> Resp:
    sid, _, rest = path[21:].partition("/")  # len("/2010-04-01/Accounts/")
    if rest != "Messages.json":
        return _tw_err(404, 20404, f"The requested resource {path} was not found")
    if not _basic_ok(h.get("authorization")):
        return _tw_err(401, 20003, "Authenticate")
    f = st.faults.get("twilio")
    if f is not None and f.fires():
        code, msg = _TWILIO_FAULT.get(f.status, (20500, "Internal Server Error"))
        return _tw_err(f.status, code, f.reason or msg, _retry_after(f))
    form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
    to, from_, text = form.get("To"), form.get("From"), form.get("Body")
    if not to:
        return _tw_err(400, 21604, "A 'To' phone number is required.")
    if not from_ and not form.get("MessagingServiceSid"):
        return _tw_err(400, 21603, "A 'From' phone number is required.")
    if not text and not form.get("MediaUrl"):
        return _tw_err(400, 21602, "Message body is required.")
    if to in _TWILIO_MAGIC:
        code, msg = _TWILIO_MAGIC[to]
        return _tw_err(400, code, msg)
    if not _E164.fullmatch(to):
        return _tw_err(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    cb = form.get("StatusCallback")
    nid = parse_qs(urlsplit(cb).query).get("nid", [None])[0] if cb else None
    st.accept("twilio", to, nid, None, text)
    msid = "SM" + uuid.uuid4().hex
    now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    uri = f"/2010-04-01/Accounts/{sid}/Messages/{msid}"
    return json_resp(201, {
        "account_sid": sid, "api_version": "2010-04-01", "body": text,
        "date_created": now, "date_sent": None, "date_updated": now,
        "direction": "outbound-api", "error_code": None, "error_message": None,
        "from": from_, "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": "0", "num_segments": "1", "price": None, "price_unit": "USD",
        "sid": msid, "status": "queued", "to": to,
        "subresource_uris": {"media": f"{uri}/Media.json"}, "uri": f"{uri}.json"})


# --- Amazon SES v2: POST /v2/email/outbound-emails (SigV4) --------------------------------
# Error type in the x-amzn-ErrorType header, message in the JSON body (restJson protocol).
# The sandbox checks only that a SigV4 Authorization header is present, not the signature.
_SES_FAULT = {400: "BadRequestException", 403: "AccessDeniedException",
              404: "NotFoundException", 429: "TooManyRequestsException",
              500: "InternalFailure", 503: "ServiceUnavailable"}


def _ses_err(status: int, etype: str, message: str, headers: Headers | None = None) -> Resp:
    return json_resp(status, {"message": message},
                     [("x-amzn-errortype", etype), ("x-amzn-requestid", str(uuid.uuid4()))]
                     + (headers or []))


def _ses_bad(message: str) -> Resp:
    return _ses_err(400, "BadRequestException", message)


def ses(st: State, path: str, h, body: bytes) -> Resp:
    if path != "/v2/email/outbound-emails":
        return _ses_err(404, "NotFoundException", f"Resource {path} not found.")
    if not (h.get("authorization") or "").startswith("AWS4-HMAC-SHA256"):
        return _ses_err(403, "InvalidSignatureException",
                        "The request signature we calculated does not match the signature you "
                        "provided. Check your AWS Secret Access Key and signing method.")
    f = st.faults.get("ses")
    if f is not None and f.fires():
        # a fault's reason, when set, names the error type (e.g. "SendingPausedException")
        etype = f.reason or _SES_FAULT.get(f.status, "InternalFailure")
        return _ses_err(f.status, etype, f"Injected {etype}.", _retry_after(f))
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _ses_bad("Invalid JSON in request body.")
    if type(req) is not dict:
        return _ses_bad("Invalid request body.")
    if not req.get("FromEmailAddress"):
        return _ses_bad("FromEmailAddress is required.")
    dest = req.get("Destination")
    tos = dest.get("ToAddresses") if type(dest) is dict else None
    if type(tos) is not list or not tos:
        return _ses_bad("Destination.ToAddresses must have at least one address.")
    n = len(tos) + len(dest.get("CcAddresses") or ()) + len(dest.get("BccAddresses") or ())
    if n > 50:
        return _ses_err(400, "MessageRejected", "Recipient count exceeds 50.")
    for a in tos:
        if type(a) is not str or "@" not in a:
            return _ses_bad(f"Illegal address: {a!r}.")
    content = req.get("Content")
    if type(content) is not dict:
        return _ses_bad("Content is required.")
    simple, template = content.get("Simple"), content.get("Template")
    if type(simple) is dict:
        title = (simple.get("Subject") or {}).get("Data")
        b = simple.get("Body") or {}
        text = (b.get("Text") or b.get("Html") or {}).get("Data")
        if title is None or text is None:
            return _ses_bad("Simple content needs Subject.Data and Body.Text or Body.Html.")
    elif type(template) is dict and (template.get("TemplateName") or template.get("TemplateArn")):
        title = template.get("TemplateName") or template.get("TemplateArn")
        text = template.get("TemplateData")
    else:
        return _ses_bad("Content must have Simple, Raw or Template.")
    for a in tos:
        if a.endswith("@bounce.test"):
            return _ses_err(400, "MessageRejected", f"Email address is on the suppression "
                            f"list or rejected: {a}")
    tags = {t.get("Name"): t.get("Value") for t in req.get("EmailTags") or ()
            if type(t) is dict}
    for a in tos:
        st.accept("ses", a, tags.get("nid"), title, text)
    return json_resp(200, {"MessageId": f"0100{uuid.uuid4().hex}-{next(_ids)}-000000"})


# --- Mailgun: POST /v3/{domain}/messages (multipart or urlencoded form, basic auth api:KEY) --
# Only 200/400/401 shapes are documented; 429/5xx bodies are our pick ({"message": ...}).
def _form(h, body: bytes) -> dict[str, list[str]]:
    """Fields of a multipart/form-data or application/x-www-form-urlencoded body."""
    ctype = h.get("content-type") or ""
    if ctype.lower().startswith("multipart/"):
        msg = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        out: dict[str, list[str]] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                raw = part.get_payload(decode=True) or b""
                out.setdefault(str(name), []).append(raw.decode(errors="replace"))
        return out
    return parse_qs(body.decode(errors="replace"), keep_blank_values=True)


def _mg_err(status: int, message: str, headers: Headers | None = None) -> Resp:
    return json_resp(status, {"message": message}, headers)


def mailgun(st: State, path: str, h, body: bytes) -> Resp:
    domain, _, rest = path[4:].partition("/")  # len("/v3/")
    if rest != "messages" or not domain:
        return 404, [("content-type", "text/plain")], b"404 page not found"
    auth = h.get("authorization") or ""
    try:
        user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
    except ValueError:
        user, key = "", ""
    if auth[:6].lower() != "basic " or user != "api" or not key:
        return 401, [("content-type", "text/plain")], b"Forbidden"
    f = st.faults.get("mailgun")
    if f is not None and f.fires():
        msg = f.reason or ("Too many requests" if f.status == 429 else "Internal Server Error")
        return _mg_err(f.status, msg, _retry_after(f))
    form = _form(h, body)
    one = {k: v[0] for k, v in form.items() if v}
    for need in ("from", "to", "subject"):
        if not one.get(need):
            return _mg_err(400, f"{need} parameter is missing")
    if not (one.get("text") or one.get("html") or one.get("template")):
        return _mg_err(400, "Need at least one of 'text', 'html' or 'template' parameters "
                       "specified")
    tos = [a.strip() for v in form["to"] for a in v.split(",") if a.strip()]
    for a in tos:
        if "@" not in a or a.startswith("@") or a.endswith("@"):
            return _mg_err(400, "to parameter is not a valid address. please check "
                           "documentation")
    for a in tos:
        st.accept("mailgun", a, one.get("v:nid"), one["subject"],
                  one.get("text") or one.get("html") or one.get("template"))
    return json_resp(200, {"id": f"<{time.strftime('%Y%m%d%H%M%S')}.{uuid.uuid4().hex[:16]}"
                                 f"@{domain}>", "message": "Queued. Thank you."})


# --- Vonage SMS: POST /sms/json (form or JSON) ----------------------------------------------
# Always HTTP 200: the outcome is messages[].status (+ error-text). Injected faults keep 200 and
# map fault.status to a status code: 429 -> 1 Throttled, 401/403 -> 4, 5xx -> 5, else 3.
_VONAGE_TEXT = {"1": "Throttled", "2": "Missing Parameters", "3": "Invalid Parameters",
                "4": "Bad Credentials", "5": "Internal Error", "6": "Invalid Message",
                "12": "Message too long"}
_VONAGE_MAGIC = {"15005550001": ("3", "Invalid Message: the to number is not valid")}


def _vonage_fault_code(status: int) -> str:
    if status == 429:
        return "1"
    if status in (401, 403):
        return "4"
    return "5" if status >= 500 else "3"


def _vonage_err(code: str, text: str, to: str | None = None,
                headers: Headers | None = None) -> Resp:
    m = {"to": to, "status": code, "error-text": text} if to else {"status": code,
                                                                    "error-text": text}
    return json_resp(200, {"message-count": "1", "messages": [m]}, headers)


def vonage(st: State, path: str, h, body: bytes) -> Resp:
    if path != "/sms/json":
        return json_resp(404, {"error": f"no such endpoint {path}"})
    if (h.get("content-type") or "").lower().startswith("application/json"):
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            req = None
        if type(req) is not dict:
            return _vonage_err("2", "Missing Parameters")
        form = {k: "" if v is None else str(v) for k, v in req.items()}
    else:
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
    to = form.get("to") or None
    # wrong credentials: an api_secret starting with "bad" (the sandbox knows no real keys)
    if not form.get("api_key") or not form.get("api_secret") or form["api_secret"][:3] == "bad":
        return _vonage_err("4", "Bad Credentials", to)
    f = st.faults.get("vonage")
    if f is not None and f.fires():
        code = _vonage_fault_code(f.status)
        return _vonage_err(code, f.reason or _VONAGE_TEXT[code], to, _retry_after(f))
    for need in ("from", "to", "text"):
        if not form.get(need):
            return _vonage_err("2", f"Missing {need} param", to)
    if to in _VONAGE_MAGIC:
        code, text = _VONAGE_MAGIC[to]
        return _vonage_err(code, text, to)
    if not to.isdigit() or not 7 <= len(to) <= 15:
        return _vonage_err("3", "Invalid to address", to)
    text = form["text"]
    if len(text) > 3200:
        return _vonage_err("12", "Message too long", to)
    ref = form.get("client-ref") or None
    st.accept("vonage", to, ref, None, text)
    m = {"to": to, "message-id": uuid.uuid4().hex[:16].upper(), "status": "0",
         "remaining-balance": "100.00000000", "message-price": "0.00740000", "network": "310260"}
    if ref:
        m["client-ref"] = ref
    return json_resp(200, {"message-count": "1", "messages": [m]})
