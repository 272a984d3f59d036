"""The one classification of a send, shared by every provider module.

Every provider answer (HTTP status, error body, library exception, connection error) is
classified once, in its provider module, into one of these statuses; the sink then only
switches on ``status`` (receipts, retry topic, token deactivation):

``sent``: the provider accepted it.  ``retry``: 429/5xx/timeout/connection error (may carry
``retry_after`` seconds: honour it).  ``failed``: permanent (bad request, invalid number).
``invalid_target``: the token/address is gone: deactivate it, never retry.
``unsubscribed``: the recipient opted out at the provider (SMS STOP): respect it.
``duplicate``: the sink's sent-marker says it was already delivered (not a provider answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.task import DeliveryTask

Status = Literal["sent", "retry", "failed", "invalid_target", "unsubscribed", "duplicate"]


@dataclass(frozen=True, slots=True)
class SendResult:
    task: DeliveryTask
    status: Status
    reason: str = ""
    retry_after: float | None = None  # seconds, when the provider said how long to wait
    provider_ref: str | None = None  # apns-id, FCM message name, Twilio SM… sid


def sent(t: DeliveryTask, ref: str | None = None) -> SendResult:
    return SendResult(t, "sent", "", None, ref)


def retry(t: DeliveryTask, reason: str, after: float | None = None) -> SendResult:
    return SendResult(t, "retry", reason, after)


def failed(t: DeliveryTask, reason: str) -> SendResult:
    return SendResult(t, "failed", reason)


def invalid_target(t: DeliveryTask, reason: str) -> SendResult:
    return SendResult(t, "invalid_target", reason)


def unsubscribed(t: DeliveryTask, reason: str) -> SendResult:
    return SendResult(t, "unsubscribed", reason)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare for these APIs: ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def answered_ok(t: DeliveryTask, resp, provider: str, ref_field: str) -> SendResult | None:
    """The two answers every JSON HTTP provider shares: no answer at all (retry), and 200
    with the provider's message id in ``ref_field``.  None: classify the error yourself."""
    import orjson

    if resp.error is not None:
        return retry(t, f"{provider} connection: {resp.error}")
    if resp.status == 200:
        try:
            return sent(t, orjson.loads(resp.body).get(ref_field))
        except (orjson.JSONDecodeError, AttributeError):
            return sent(t)
    return None
