"""The one classification of a send, shared by every provider module.

``sent``: the provider accepted it.  ``retry``: 429/5xx/timeout/connection error (may carry
``retry_after`` seconds).  ``failed``: permanent (bad request, invalid number).
``invalid_target``: the token/address is gone: deactivate it, never retry.
``unsubscribed``: the recipient opted out at the provider (SMS STOP): respect it.
``duplicate``: the sink's sent-marker says it was already delivered.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.task import DeliveryTask


@dataclass(frozen=True, slots=True)
class SendResult:
    task: DeliveryTask
    status: str  # sent | retry | failed | invalid_target | unsubscribed | duplicate
    reason: str = ""
    retry_after: float | None = None
    provider_ref: str | None = None


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
