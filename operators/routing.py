"""Per-request decisions: which channels, which targets, and why something is not sent.

``route`` turns one validated request for one recipient, with that user's settings
and devices, into delivery tasks plus receipts for everything that will not be sent.
"""

from __future__ import annotations

from operators.escalation import DEFAULT_ESCALATION
from operators.escalation import escalate as escalation_channel
from operators.user_state import UserRow
from schemas.identity import send_key
from schemas.receipt import Outcome, Receipt
from schemas.request import NotificationRequest, is_critical
from schemas.task import DeliveryTask

# Channels omitted by the producer: the cheap ones.  Email and SMS cost money or attention,
# so a producer names them.
DEFAULT_CHANNELS: tuple[str, ...] = ("push", "inapp")
PROVIDER = {"email": "sendgrid", "sms": "twilio", "inapp": "redis"}


def receipt(
    req: NotificationRequest | None,
    user_id: str,
    channel: str,
    outcome: Outcome,
    reason: str,
    now_ms: int,
    *,
    provider: str = "",
    target: str = "",
    notification_id: str = "",
) -> Receipt:
    return Receipt(
        notification_id=req.id if req else notification_id,
        user_id=user_id,
        type=req.type if req else "",
        priority=req.priority if req else "",
        channel=channel,
        provider=provider,
        target=target,
        outcome=outcome.value,
        reason=reason,
        created_ms=req.created_at if req else now_ms,
        event_ms=now_ms,
    )


def _task(req: NotificationRequest, user: str, channel: str, provider: str, target_id: str,
          address: str, row: UserRow) -> DeliveryTask:
    return DeliveryTask(
        notification_id=req.id,
        user_id=user,
        type=req.type,
        priority=req.priority,
        channel=channel,
        provider=provider,
        target_id=target_id,
        address=address,
        title=req.title,
        body=req.body,
        template=req.template,
        data=req.data,
        collapse_key=req.collapse_key,
        created_ms=req.created_at,
        expires_ms=req.expires_at or 0,
        locale=row.locale,
        quiet=None if is_critical(req.priority) else row.quiet,
        producer=req.producer,
        key=send_key(req.producer, req.type, req.event(), req.id, user, channel, target_id),
    )


def route(
    req: NotificationRequest,
    user: str,
    row: UserRow,
    now_ms: int,
    tasks: list[DeliveryTask],
    receipts: list[Receipt],
    chains: dict[str, list[str]] = DEFAULT_ESCALATION,
) -> None:
    """Append the tasks to send and the receipts of what is not sent (preference, no target)."""
    channels = req.channels or DEFAULT_CHANNELS
    opted = row.opted_out(req.type)
    for ch in channels:
        if not row.channel_on(ch):
            receipts.append(receipt(req, user, ch, Outcome.SUPPRESSED, f"{ch} turned off", now_ms))
            continue
        if opted is not None:
            receipts.append(
                receipt(req, user, ch, Outcome.SUPPRESSED, f"opted out of {opted}", now_ms)
            )
            continue
        if ch == "push":
            if not row.devices:
                nxt = escalation_channel(req.type, req.priority, "push", chains)
                if nxt == "sms" and "sms" not in channels and row.phone and row.channel_on("sms"):
                    receipts.append(receipt(req, user, ch, Outcome.NO_TARGET,
                                            "no active device; escalated to sms", now_ms))
                    tasks.append(_task(req, user, "sms", "twilio", "phone", row.phone, row))
                    continue
                receipts.append(receipt(req, user, ch, Outcome.NO_TARGET, "no active device", now_ms))
            for token_id, platform, token in row.devices:
                tasks.append(_task(req, user, ch, platform, token_id, token, row))
        elif ch == "email":
            if row.email:
                tasks.append(_task(req, user, ch, "sendgrid", "email", row.email, row))
            else:
                receipts.append(receipt(req, user, ch, Outcome.NO_TARGET, "no email address", now_ms))
        elif ch == "sms":
            if row.phone:
                tasks.append(_task(req, user, ch, "twilio", "phone", row.phone, row))
            else:
                receipts.append(receipt(req, user, ch, Outcome.NO_TARGET, "no phone number", now_ms))
        else:  # inapp
            tasks.append(_task(req, user, ch, "redis", "inbox", "", row))
