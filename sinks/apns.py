"""APNs (HTTP/2 provider API): build_request (pure), classify, send.

Errors: https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns
"""

from __future__ import annotations

from hashlib import blake2b

import orjson

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import results as R
from sinks.push_transport import HttpReq, HttpResp, PushTransport, send_checked

MAX_PAYLOAD = 4096
INVALID_TOKEN = {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"}
RETRY_STATUS = {429, 500, 503}


def apns_id(t: DeliveryTask) -> str:
    """Deterministic per (notification, device), in APNs' 8-4-4-4-12 form: a resend is
    recognisable.  (blake2b: ~5x cheaper than uuid.uuid5 on the hot path.)"""
    h = blake2b(f"{t.notification_id}/{t.target_id}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def payload(t: DeliveryTask) -> bytes:
    aps: dict = {"alert": {"title": t.title or "", "body": t.body or ""}}
    if t.priority == "critical":
        aps["sound"] = "default"
    if t.collapse_key:
        aps["thread-id"] = t.collapse_key
    body: dict = {"aps": aps, "nid": t.notification_id}
    if t.data:
        body["data"] = t.data
    return orjson.dumps(body)


def build_request(t: DeliveryTask, cfg: Settings) -> HttpReq:
    headers = [
        ("authorization", f"bearer {cfg.apns_auth_token.get_secret_value()}"),
        ("apns-topic", cfg.apns_topic),
        ("apns-push-type", "alert"),
        ("apns-priority", "10" if t.priority in ("critical", "high") else "5"),
        ("apns-expiration", str(t.expires_ms // 1000)),
        ("apns-id", apns_id(t)),
        ("content-type", "application/json"),
    ]
    if t.collapse_key:
        headers.append(("apns-collapse-id", t.collapse_key))
    return HttpReq(f"{cfg.apns_url}/3/device/{t.address}", headers, payload(t))


def classify(t: DeliveryTask, resp: HttpResp) -> R.SendResult:
    if resp.error is not None:
        return R.retry(t, f"connection: {resp.error}")
    if resp.status == 200:
        return R.sent(t, resp.headers.get("apns-id"))
    try:
        reason = orjson.loads(resp.body).get("reason", "") if resp.body else ""
    except (orjson.JSONDecodeError, AttributeError):
        reason = ""
    text = f"apns {resp.status} {reason}".strip()
    if reason in INVALID_TOKEN or resp.status == 410:
        return R.invalid_target(t, text)
    if resp.status in RETRY_STATUS:
        return R.retry(t, text, R.parse_retry_after(resp.headers.get("retry-after")))
    return R.failed(t, text)


def send(transport: PushTransport, tasks: list[DeliveryTask], cfg: Settings) -> list[R.SendResult]:
    return send_checked(transport, tasks, lambda t: build_request(t, cfg), classify,
                        MAX_PAYLOAD, "apns")
