"""FCM HTTP v1: ``build_request`` (pure), ``classify``, ``send``.

Same shape as sinks/apns.py.  One request per message (the v1 API has no multicast), so
a batch goes out multiplexed over HTTP/2 through the ``PushTransport``.
Errors: https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode: classify on
``details[].errorCode``, not on ``status``.
"""

from __future__ import annotations

import orjson

from notiflow.config import Settings
from schemas.task import DeliveryTask, collapse_identity
from sinks import results as R
from sinks.apns import collapse_id
from sinks.push_transport import HttpReq, HttpResp, PushTransport, send_checked

MAX_PAYLOAD = 4096  # bytes of notification + data
INVALID_TOKEN = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
RETRY_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
QUOTA_MIN_DELAY_S = 60.0  # first delay after QUOTA_EXCEEDED without Retry-After


def _str(v: object) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def message(t: DeliveryTask) -> dict:
    """The v1 ``{"message": ...}`` body: data values are strings (FCM requires it), the
    notification id rides in ``data.nid``; ``apns.headers`` carry the same priority,
    collapse id and expiry for iOS devices reached through FCM.

    Every message carries its ``collapse_identity`` where a device replaces what it shows:
    ``android.notification.tag`` and the APNs override's ``apns-collapse-id``, so a re-send
    after a crash replaces itself.  ``android.collapse_key`` only collapses messages FCM
    stores for an offline device, and FCM keeps at most four distinct keys a device (which
    four is not guaranteed): it is set only from the request's own collapse_key, never per
    notification, or offline devices could lose messages."""
    data = {k: _str(v) for k, v in (t.data or {}).items()}
    data["nid"] = t.notification_id
    urgent = t.priority in ("critical", "high")
    ident = collapse_identity(t)
    android: dict = {"priority": "HIGH" if urgent else "NORMAL",
                     "notification": {"tag": ident}}
    apns_headers = {"apns-priority": "10" if urgent else "5",
                    "apns-collapse-id": collapse_id(ident)}
    if t.collapse_key:
        android["collapse_key"] = t.collapse_key
    if t.expires_ms:
        android["ttl"] = f"{max(0, (t.expires_ms - t.created_ms) // 1000)}s"
        apns_headers["apns-expiration"] = str(t.expires_ms // 1000)
    apns: dict = {"headers": apns_headers}
    if t.priority == "critical":
        apns["payload"] = {"aps": {"sound": "default"}}
    return {"message": {"token": t.address,
                        "notification": {"title": t.title or "", "body": t.body or ""},
                        "data": data, "android": android, "apns": apns}}


def build_request(t: DeliveryTask, cfg: Settings) -> HttpReq:
    """POST {fcm_url}/v1/projects/{project}/messages:send with the OAuth bearer (pure)."""
    return HttpReq(
        f"{cfg.fcm_url}/v1/projects/{cfg.fcm_project}/messages:send",
        [("authorization", f"Bearer {cfg.fcm_access_token.get_secret_value()}"),
         ("content-type", "application/json")],
        orjson.dumps(message(t)),
    )


def payload_bytes(t: DeliveryTask) -> int:
    """What FCM counts against its 4096-byte limit: notification text plus data keys and
    values (the JSON envelope, token and options do not count)."""
    n = len((t.title or "").encode()) + len((t.body or "").encode()) + len(t.notification_id) + 3
    for k, v in (t.data or {}).items():
        n += len(k.encode()) + len(_str(v).encode())
    return n


def check(t: DeliveryTask, req: HttpReq) -> str | None:
    """Why FCM would refuse this request for sure (gorush's CheckMessage), or None."""
    if not t.address:
        return "fcm: empty registration token"
    size = payload_bytes(t)
    if size > MAX_PAYLOAD:
        return f"fcm payload {size} bytes > {MAX_PAYLOAD}"
    return None


def error_code(body: bytes) -> tuple[str, str]:
    """(errorCode from details, message) of a google error body."""
    try:
        err = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "", ""
    if not isinstance(err, dict):
        return "", str(err)
    code = ""
    for d in err.get("details") or []:
        if isinstance(d, dict) and d.get("errorCode"):
            code = d["errorCode"]
    return code, str(err.get("message", ""))


def classify(t: DeliveryTask, resp: HttpResp) -> R.SendResult:
    """One FCM answer -> SendResult (UNREGISTERED/SENDER_ID_MISMATCH invalid_target;
    QUOTA_EXCEEDED retry >= 60 s unless Retry-After; UNAVAILABLE/INTERNAL/5xx and
    connection errors retry; INVALID_ARGUMENT and the rest failed)."""
    early = R.answered_ok(t, resp, "fcm", "name")
    if early is not None:
        return early
    code, msg = error_code(resp.body)
    text = f"fcm {resp.status} {code or 'error'}: {msg}".strip()
    if code in INVALID_TOKEN:
        return R.invalid_target(t, text)
    after = R.parse_retry_after(resp.headers.get("retry-after"))
    if code in RETRY_CODES or resp.status == 429 or resp.status >= 500:
        if (code == "QUOTA_EXCEEDED" or resp.status == 429) and after is None:
            after = QUOTA_MIN_DELAY_S
        return R.retry(t, text, after)
    return R.failed(t, text)


def send(transport: PushTransport, tasks: list[DeliveryTask], cfg: Settings,
         on_result=None) -> list[R.SendResult]:
    """One multiplexed batch; results in the order of ``tasks`` (and to ``on_result`` as
    each answer arrives)."""
    return send_checked(transport, tasks, lambda t: build_request(t, cfg), classify, check,
                        on_result)
