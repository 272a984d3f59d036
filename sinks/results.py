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

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from schemas.limits import bounded
from schemas.task import DeliveryTask

log = logging.getLogger(__name__)
MAX_RETRY_AFTER_S = 86_400.0  # a provider's Retry-After past a day is not believed

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
        after = float(value)
    except ValueError:
        return None
    # "inf" or "nan" would overflow the due time (and the retry flow) downstream
    return min(max(0.0, after), MAX_RETRY_AFTER_S) if math.isfinite(after) else None


def payload_failed(t: DeliveryTask, provider: str, e: BaseException) -> SendResult:
    """A task whose payload could not be built: it fails alone, with the reason."""
    return failed(t, bounded(f"{provider} payload: {type(e).__name__}: {e}"))


def isolated(send: Callable[[list[DeliveryTask]], list[SendResult]], tasks: list[DeliveryTask],
             what: str) -> list[SendResult]:
    """``send(tasks)``; should it raise (a bug nobody foresaw), each task is sent alone, so
    the task that raises gets a ``failed`` result with the reason and the others go out.
    (A task the first call had already sent may go out twice: better than a stopped lane.)"""
    try:
        return send(tasks)
    except Exception:
        log.exception("%s: a batch of %d raised; sending each task alone", what, len(tasks))
    out: list[SendResult] = []
    for t in tasks:
        try:
            out += send([t])
        except Exception as e:
            log.exception("%s: task %s raised", what, t.notification_id)
            out.append(failed(t, bounded(f"{what}: internal error: {type(e).__name__}: {e}")))
    return out


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
