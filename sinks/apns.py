"""APNs (HTTP/2 provider API): ``build_request`` (pure), ``classify``, ``send``.

Same shape as every provider module (gorush's notification_apns.go): the request is built
and checked without I/O, one batch goes out multiplexed through a ``PushTransport``, and
each answer is classified once into a ``SendResult``.
Errors: https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns
"""

from __future__ import annotations

import uuid
from hashlib import blake2b, sha1

import orjson

from notiflow.config import Settings
from schemas.task import DeliveryTask, collapse_identity
from sinks import results as R
from sinks.push_transport import HttpReq, HttpResp, PushTransport, send_checked

MAX_PAYLOAD = 4096  # bytes of JSON payload (5120 for VoIP, which we do not send)
MAX_COLLAPSE_ID = 64  # bytes
# a token the provider says is not (or no longer) valid: deactivate it
INVALID_TOKEN = frozenset({"BadDeviceToken", "Unregistered"})
RETRY_STATUS = frozenset({429, 500, 503})
# the JWT expired: a fresh one fixes it (PROVIDERS.md: refresh, retry)
RETRY_REASONS = frozenset({"ExpiredProviderToken"})
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "apns.notiflow")
_NS = ID_NAMESPACE.bytes


def apns_id(t: DeliveryTask) -> str:
    """``uuid5(ID_NAMESPACE, "notification_id/token_id")``: a resend of the same notification
    to the same device carries the same apns-id.  Computed directly (same value as
    ``uuid.uuid5``, a third of its CPU)."""
    h = bytearray(sha1(_NS + f"{t.notification_id}/{t.target_id}".encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def collapse_id(key: str) -> str:
    """The collapse key, or (over APNs' 64 bytes) a stable digest of it: equal keys still
    collapse, and the request is not refused with BadCollapseId."""
    if len(key.encode()) <= MAX_COLLAPSE_ID:
        return key
    return blake2b(key.encode(), digest_size=16).hexdigest()


def payload(t: DeliveryTask) -> bytes:
    """``{"aps": {...}, "nid": ..., **data}``: custom keys sit beside ``aps`` (Apple's
    convention, and gorush's); they never replace ``aps`` or ``nid``."""
    aps: dict = {"alert": {"title": t.title or "", "body": t.body or ""}}
    if t.priority == "critical":
        aps["sound"] = "default"
    if t.collapse_key:
        aps["thread-id"] = t.collapse_key
    body: dict = dict(t.data) if t.data else {}
    body["aps"] = aps
    body["nid"] = t.notification_id
    return orjson.dumps(body)


def build_request(t: DeliveryTask, cfg: Settings) -> HttpReq:
    """POST {apns_url}/3/device/{token} with the provider-token headers (pure).  Every
    push carries an apns-collapse-id (``collapse_identity``): a re-send after a crash
    replaces the shown notification instead of adding a second one."""
    headers = [
        ("authorization", f"bearer {cfg.apns_auth_token.get_secret_value()}"),
        ("apns-topic", cfg.apns_topic),
        ("apns-push-type", "alert"),
        ("apns-priority", "10" if t.priority in ("critical", "high") else "5"),
        ("apns-expiration", str(t.expires_ms // 1000)),  # epoch s; 0: deliver now or never
        ("apns-id", apns_id(t)),
        ("apns-collapse-id", collapse_id(collapse_identity(t))),
        ("content-type", "application/json"),
    ]
    return HttpReq(f"{cfg.apns_url}/3/device/{t.address}", headers, payload(t))


def check(t: DeliveryTask, req: HttpReq) -> str | None:
    """Why APNs would refuse this request for sure (gorush's CheckMessage), or None."""
    if not t.address:
        return "apns: empty device token"
    if len(req.body) > MAX_PAYLOAD:
        return f"apns payload {len(req.body)} bytes > {MAX_PAYLOAD}"
    return None


def classify(t: DeliveryTask, resp: HttpResp) -> R.SendResult:
    """One APNs answer -> SendResult (200 sent; BadDeviceToken/410 invalid_target;
    429/500/503/expired JWT/connection errors retry; other 4xx failed)."""
    if resp.error is not None:
        return R.retry(t, f"apns connection: {resp.error}")
    if resp.status == 200:
        return R.sent(t, resp.headers.get("apns-id"))
    try:
        reason = orjson.loads(resp.body).get("reason", "") if resp.body else ""
    except (orjson.JSONDecodeError, AttributeError):
        reason = ""
    text = f"apns {resp.status} {reason}".strip()
    if reason in INVALID_TOKEN or resp.status == 410:
        return R.invalid_target(t, text)
    if resp.status in RETRY_STATUS or resp.status >= 500 or reason in RETRY_REASONS:
        return R.retry(t, text, R.parse_retry_after(resp.headers.get("retry-after")))
    return R.failed(t, text)


def send(transport: PushTransport, tasks: list[DeliveryTask], cfg: Settings,
         on_result=None) -> list[R.SendResult]:
    """One multiplexed batch; results in the order of ``tasks`` (and to ``on_result`` as
    each answer arrives)."""
    return send_checked(transport, tasks, lambda t: build_request(t, cfg), classify, check,
                        on_result)
