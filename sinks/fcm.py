"""FCM HTTP v1: build_request (pure), classify, send.

Errors: https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode — classify on
``details[].errorCode``, not on ``status``.
"""

from __future__ import annotations

import orjson

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import results as R
from sinks.push_transport import HttpReq, HttpResp, PushTransport, send_checked

MAX_PAYLOAD = 4096
INVALID_TOKEN = {"UNREGISTERED", "SENDER_ID_MISMATCH"}
RETRY_CODES = {"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"}
QUOTA_MIN_DELAY_S = 60.0


def message(t: DeliveryTask) -> dict:
    data = {k: v if isinstance(v, str) else orjson.dumps(v).decode()
            for k, v in (t.data or {}).items()}
    data["nid"] = t.notification_id
    android: dict = {"priority": "HIGH" if t.priority in ("critical", "high") else "NORMAL"}
    if t.collapse_key:
        android["collapse_key"] = t.collapse_key
    if t.expires_ms:
        android["ttl"] = f"{max(0, (t.expires_ms - t.created_ms) // 1000)}s"
    return {"message": {"token": t.address,
                        "notification": {"title": t.title or "", "body": t.body or ""},
                        "data": data, "android": android}}


def build_request(t: DeliveryTask, cfg: Settings) -> HttpReq:
    return HttpReq(
        f"{cfg.fcm_url}/v1/projects/{cfg.fcm_project}/messages:send",
        [("authorization", f"Bearer {cfg.fcm_access_token.get_secret_value()}"),
         ("content-type", "application/json")],
        orjson.dumps(message(t)),
    )


def error_code(body: bytes) -> tuple[str, str]:
    """(errorCode from details, message) of a google error body."""
    try:
        err = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "", ""
    code = ""
    for d in err.get("details") or []:
        if isinstance(d, dict) and d.get("errorCode"):
            code = d["errorCode"]
    return code, str(err.get("message", ""))


def classify(t: DeliveryTask, resp: HttpResp) -> R.SendResult:
    if resp.error is not None:
        return R.retry(t, f"connection: {resp.error}")
    if resp.status == 200:
        try:
            return R.sent(t, orjson.loads(resp.body).get("name"))
        except orjson.JSONDecodeError:
            return R.sent(t)
    code, msg = error_code(resp.body)
    text = f"fcm {resp.status} {code or 'error'}: {msg}".strip()
    if code in INVALID_TOKEN:
        return R.invalid_target(t, text)
    after = R.parse_retry_after(resp.headers.get("retry-after"))
    if code in RETRY_CODES or resp.status in (429, 500, 503):
        if code == "QUOTA_EXCEEDED" and after is None:
            after = QUOTA_MIN_DELAY_S
        return R.retry(t, text, after)
    return R.failed(t, text)


def send(transport: PushTransport, tasks: list[DeliveryTask], cfg: Settings) -> list[R.SendResult]:
    return send_checked(transport, tasks, lambda t: build_request(t, cfg), classify,
                        MAX_PAYLOAD, "fcm")
