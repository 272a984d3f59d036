"""The four provider APIs.  Each handler takes (path, headers, body) and returns
(status, headers, body), answering with that provider's documented success and error shapes.
"""

from __future__ import annotations

import re
import time
import uuid
from itertools import count
from urllib.parse import parse_qs, urlsplit

import orjson

from sandbox.state import Fault, State

Resp = tuple[int, list[tuple[str, str]], bytes]
JSON = [("content-type", "application/json")]
_ids = count(1)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
APNS_PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm",
                   "location", "liveactivity", "pushtotalk"}


def _json(status: int, obj: object, headers: list[tuple[str, str]] | None = None) -> Resp:
    return status, JSON + (headers or []), orjson.dumps(obj)


def _retry_after(f: Fault) -> list[tuple[str, str]]:
    return [("retry-after", str(int(f.retry_after)))] if f.retry_after is not None else []


# --- APNs: POST /3/device/{token} -------------------------------------------------------
_APNS_FAULT_REASON = {429: "TooManyRequests", 500: "InternalServerError",
                      503: "ServiceUnavailable", 403: "ExpiredProviderToken"}


def apns(st: State, path: str, h, body: bytes) -> Resp:
    token = path[len("/3/device/"):]

    def err(status: int, reason: str, extra: dict | None = None) -> Resp:
        return _json(status, {"reason": reason, **(extra or {})},
                     [("apns-id", h.get("apns-id") or str(uuid.uuid4()))])

    auth = h.get("authorization") or ""
    if not auth.lower().startswith("bearer ") or len(auth) < 8:
        return err(403, "MissingProviderToken")
    f = st.faults.get("apns")
    if f is not None and f.fires():
        s, hdr, b = err(f.status, f.reason or _APNS_FAULT_REASON.get(f.status, "InternalServerError"))
        return s, hdr + _retry_after(f), b
    if not h.get("apns-topic"):
        return err(400, "MissingTopic")
    if h.get("apns-push-type") not in APNS_PUSH_TYPES:
        return err(400, "InvalidPushType")
    prio = h.get("apns-priority")
    if prio not in (None, "1", "5", "10"):
        return err(400, "BadPriority")
    collapse = h.get("apns-collapse-id")
    if collapse is not None and len(collapse.encode()) > 64:
        return err(400, "BadCollapseId")
    if len(body) > 4096:
        return err(413, "PayloadTooLarge")
    if not token or token.startswith("bad"):
        return err(400, "BadDeviceToken")
    if token.startswith("gone"):
        return err(410, "Unregistered", {"timestamp": int(time.time() * 1000)})
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return err(400, "PayloadEmpty")
    if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
        return err(400, "PayloadEmpty")
    alert = payload["aps"].get("alert")
    title, text = (alert.get("title"), alert.get("body")) if isinstance(alert, dict) else (None, alert)
    st.accept("apns", token, str(payload.get("nid", "")), title, text, collapse, prio)
    return 200, [("apns-id", h.get("apns-id") or str(uuid.uuid4()))], b""


# --- FCM HTTP v1: POST /v1/projects/{project}/messages:send -----------------------------
_FCM_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
               404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_FCM_CODE = {400: "INVALID_ARGUMENT", 401: "THIRD_PARTY_AUTH_ERROR", 403: "SENDER_ID_MISMATCH",
             404: "UNREGISTERED", 429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def _fcm_err(status: int, message: str, code: str | None = None,
             headers: list[tuple[str, str]] | None = None) -> Resp:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code or _FCM_CODE.get(status, "INTERNAL")}]
    return _json(status, {"error": {"code": status, "message": message,
                                    "status": _FCM_STATUS.get(status, "INTERNAL"),
                                    "details": details}}, headers)


def fcm(st: State, path: str, h, body: bytes) -> Resp:
    project = path[len("/v1/projects/"):].split("/", 1)[0]
    auth = h.get("authorization") or ""
    if not auth.lower().startswith("bearer "):
        return _json(401, {"error": {"code": 401, "message": "Request is missing required "
                                     "authentication credential.", "status": "UNAUTHENTICATED"}})
    f = st.faults.get("fcm")
    if f is not None and f.fires():
        return _fcm_err(f.status, f.reason or "injected failure", None, _retry_after(f))
    if len(body) > 4096:
        return _fcm_err(400, "Message is too big", "INVALID_ARGUMENT")
    try:
        msg = orjson.loads(body)["message"]
        token = msg["token"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _fcm_err(400, "Invalid JSON payload received. 'message.token' is required.")
    if not isinstance(token, str) or not token or token.startswith("bad"):
        return _fcm_err(400, "The registration token is not a valid FCM registration token")
    if token.startswith("gone"):
        return _fcm_err(404, "Requested entity was not found.", "UNREGISTERED")
    data = msg.get("data") or {}
    note = msg.get("notification") or {}
    android = msg.get("android") or {}
    st.accept("fcm", token, str(data.get("nid", "")), note.get("title"), note.get("body"),
              android.get("collapse_key"), android.get("priority"))
    return _json(200, {"name": f"projects/{project}/messages/{next(_ids)}"})


# --- SendGrid v3: POST /v3/mail/send -----------------------------------------------------
def _sg_err(status: int, message: str, field: str | None = None,
            headers: list[tuple[str, str]] | None = None) -> Resp:
    return _json(status, {"errors": [{"field": field, "message": message, "help": None}]}, headers)


def sendgrid(st: State, path: str, h, body: bytes) -> Resp:
    auth = h.get("authorization") or ""
    if not auth.lower().startswith("bearer ") or len(auth) < 10:
        return _sg_err(401, "The provided authorization grant is invalid, expired, or revoked")
    f = st.faults.get("sendgrid")
    if f is not None and f.fires():
        if f.status == 429:
            reset = int(time.time() + (f.retry_after or 1))
            return _sg_err(429, "too many requests", None, [
                ("x-ratelimit-limit", "600"), ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", str(reset))] + _retry_after(f))
        return _sg_err(f.status, f.reason or "injected failure", None, _retry_after(f))
    try:
        mail = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _sg_err(400, "Bad Request", None)
    pers = mail.get("personalizations")
    if not isinstance(pers, list) or not pers:
        return _sg_err(400, "The personalizations field is required and must have at least "
                       "one personalization.", "personalizations")
    if len(pers) > 1000:
        return _sg_err(400, "The personalizations field is limited to 1000 personalizations "
                       "per request.", "personalizations")
    if not (mail.get("from") or {}).get("email"):
        return _sg_err(400, "The from object must be provided for every email send.", "from")
    has_template = bool(mail.get("template_id"))
    content = mail.get("content") or []
    if not has_template and not content:
        return _sg_err(400, "Unless a valid template_id is provided, the content parameter is "
                       "required.", "content")
    text = content[0].get("value") if content else None
    for i, p in enumerate(pers):
        tos = p.get("to") or []
        if not tos or not all(isinstance(t, dict) and "@" in str(t.get("email", "")) for t in tos):
            return _sg_err(400, "The to array is required for all personalization objects, and "
                           "must have at least one email object with a valid email address.",
                           f"personalizations.{i}.to")
        if not has_template and not (p.get("subject") or mail.get("subject")):
            return _sg_err(400, "The subject is required.", "subject")
    for p in pers:
        nid = str((p.get("custom_args") or {}).get("nid", ""))
        subject = p.get("subject") or mail.get("subject")
        for t in p["to"]:
            st.accept("sendgrid", t["email"], nid, subject, text)
    return 202, [], b""


# --- Twilio: POST /2010-04-01/Accounts/{Sid}/Messages.json ---------------------------
_TWILIO_MAGIC = {"+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
                 "+15005550009": (21614, "'To' number is not a valid mobile number"),
                 "+15005550004": (21610, "Attempt to send to unsubscribed recipient")}


def _tw_err(status: int, code: int, message: str, headers: list[tuple[str, str]] | None = None) -> Resp:
    return _json(status, {"code": code, "message": message,
                          "more_info": f"https://www.twilio.com/docs/errors/{code}",
                          "status": status}, headers)


def twilio(st: State, path: str, h, body: bytes) -> Resp:
    sid = path[len("/2010-04-01/Accounts/"):].split("/", 1)[0]
    if not (h.get("authorization") or "").lower().startswith("basic "):
        return _tw_err(401, 20003, "Authenticate")
    f = st.faults.get("twilio")
    if f is not None and f.fires():
        code = 20429 if f.status == 429 else 20500
        return _tw_err(f.status, code, f.reason or "injected failure", _retry_after(f))
    form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
    to, from_, text = form.get("To", ""), form.get("From", ""), form.get("Body")
    if to in _TWILIO_MAGIC:
        code, msg = _TWILIO_MAGIC[to]
        return _tw_err(400, code, msg)
    if not _E164.match(to):
        return _tw_err(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if not text:
        return _tw_err(400, 21602, "Message body is required.")
    cb = form.get("StatusCallback")
    nid = parse_qs(urlsplit(cb).query).get("nid", [""])[0] if cb else ""
    st.accept("twilio", to, nid, None, text)
    msid = "SM" + uuid.uuid4().hex
    now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    return _json(201, {
        "sid": msid, "account_sid": sid, "to": to, "from": from_, "body": text,
        "status": "queued", "num_segments": "1", "direction": "outbound-api",
        "date_created": now, "date_updated": now, "date_sent": None, "price": None,
        "error_code": None, "error_message": None, "api_version": "2010-04-01",
        "uri": f"/2010-04-01/Accounts/{sid}/Messages/{msid}.json"})
