"""One sender per channel with the same shape: ``send(tasks) -> list[SendResult]``.

They own their clients (opened lazily, one per sink partition, never shared between
threads) and hide which provider module serves the channel.  ``settle`` turns results
into receipts and device deactivations: the part every channel shares.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Protocol

from redis.exceptions import RedisError

from notiflow.config import Settings
from operators.backoff import BackoffPolicy
from operators.retry_plan import plan_retry
from operators.routing import DEFAULT_ESCALATION, escalation_channel
from schemas.device import Device, device_key, encode_device
from schemas.limits import MAX_ID_BYTES, bounded
from schemas.receipt import Outcome, Receipt
from schemas.request import NotificationRequest, encode_request
from schemas.retry import RetryEnvelope
from schemas.task import DeliveryTask
from sinks import results as R
from sinks.failover import FailoverSender
from sinks.inapp import MAX_ENTRY_BYTES, PartialWrite, entry
from sinks.rate_limit import ProviderLimits
from sinks.results import SendResult

log = logging.getLogger(__name__)


class Sender(Protocol):
    def send(self, tasks: list[DeliveryTask]) -> list[SendResult]: ...
    def close(self) -> None: ...


class InappSender:
    def __init__(self, cfg: Settings) -> None:
        from sinks.inapp import InappWriter

        self._w = InappWriter(cfg.redis_url, cfg.inbox_max, cfg.sent_marker_ttl_s, cfg.inapp_live)

    def send(self, tasks: list[DeliveryTask]) -> list[SendResult]:
        bad: list[SendResult] = []
        ok: list[DeliveryTask] = []
        entries: list[bytes] = []
        for t in tasks:  # an entry that cannot be built fails alone
            try:
                e = entry(t)
            except Exception as ex:
                bad.append(R.payload_failed(t, "inapp", ex))
                continue
            if len(e) > MAX_ENTRY_BYTES:
                bad.append(R.failed(t, f"inapp entry {len(e)} bytes > {MAX_ENTRY_BYTES}"))
                continue
            ok.append(t)
            entries.append(e)
        return bad + self._write(ok, entries)

    def _write(self, tasks: list[DeliveryTask], entries: list[bytes]) -> list[SendResult]:
        if not tasks:
            return []
        try:
            written = self._w.write(tasks, entries)
        except PartialWrite as e:  # the first script calls landed: those are sent
            n = len(e.written)
            return self._results(tasks[:n], e.written) + [
                SendResult(task=t, status="retry", reason=f"redis: {e}") for t in tasks[n:]]
        except RedisError as e:  # Redis is the in-app provider: retry later, lose nothing
            return [SendResult(task=t, status="retry", reason=f"redis: {e}") for t in tasks]
        return self._results(tasks, written)

    @staticmethod
    def _results(tasks: list[DeliveryTask], written: list[bool]) -> list[SendResult]:
        return [
            SendResult(task=t, status="sent" if ok else "duplicate",
                       reason="" if ok else "already in the inbox (sent-marker)")
            for t, ok in zip(tasks, written, strict=True)
        ]

    def close(self) -> None:
        self._w.close()


class PushSender:
    """APNs and FCM over one HTTP/2 transport per partition (libcurl by default)."""

    def __init__(self, cfg: Settings) -> None:
        from sinks import apns, fcm
        from sinks.failover import new_breaker
        from sinks.push_transport import make_transport

        self._cfg = cfg
        self._transport = make_transport(cfg)
        self._mods = {"apns": apns, "fcm": fcm}
        # a platform has one provider: an open breaker means wait (retry), not fail over
        self.breakers = {p: new_breaker(cfg, p) for p in self._mods}
        self._limits = ProviderLimits(cfg)  # shared token buckets: sends wait for tokens

    streams_answers = True  # send() reports each answer as it arrives (on_result)

    def send(self, tasks: list[DeliveryTask],
             on_result: Callable[[SendResult], None] | None = None) -> list[SendResult]:
        out: list[SendResult] = []
        for provider, mod in self._mods.items():
            mine = [t for t in tasks if t.provider == provider]
            if not mine:
                continue
            b = self.breakers[provider]
            now = int(time.time() * 1000)
            if not b.allow(now):
                out += [SendResult(t, "retry", f"{provider} circuit breaker open") for t in mine]
                continue
            results, deferred = self._limits.send(
                provider, mine,
                lambda part, mod=mod: mod.send(self._transport, part, self._cfg, on_result))
            if results and all(r.status == "retry" for r in results):
                b.record_failure(int(time.time() * 1000))
            elif results:
                b.record_success(int(time.time() * 1000))
            out += results + deferred
        return out

    def close(self) -> None:
        self._transport.close()
        self._limits.close()


SENDERS: dict[str, Callable[[Settings], Sender]] = {
    "inapp": InappSender,
    "push": PushSender,
    "email": lambda cfg: FailoverSender(cfg, cfg.email_providers),
    "sms": lambda cfg: FailoverSender(cfg, cfg.sms_providers),
}

_OUTCOME = {
    "sent": Outcome.SENT,
    "duplicate": Outcome.DUPLICATE,
    "failed": Outcome.FAILED,
    "invalid_target": Outcome.FAILED,
    "unsubscribed": Outcome.SUPPRESSED,
}


@dataclass(slots=True)
class Settled:
    """What a batch of results turns into."""

    receipts: list[Receipt] = field(default_factory=list)
    # device records to publish as inactive: (key, value, user_id)
    retire: list[tuple[bytes, bytes, str]] = field(default_factory=list)
    retry: list[RetryEnvelope] = field(default_factory=list)  # -> notify.retry
    dead: list[RetryEnvelope] = field(default_factory=list)  # -> notify.dlq
    # critical notifications to try on their next channel: (user, request) -> notify.critical
    escalate: list[tuple[str, bytes]] = field(default_factory=list)


def escalation_id(notification_id: str, channel: str) -> str:
    """``{id}~{channel}``; over the id limit, a stable digest of it (the same each time,
    so dedup still sees one escalation, and the request still passes validation)."""
    nid = f"{notification_id}~{channel}"
    if len(nid.encode()) <= MAX_ID_BYTES:
        return nid
    return f"esc-{blake2b(nid.encode(), digest_size=16).hexdigest()}~{channel}"


def escalation_request(t: DeliveryTask, channel: str) -> bytes:
    """The same notification as a new critical request for ``channel``; its id names the
    escalation, so several failed devices escalate once (dedup)."""
    return encode_request(NotificationRequest(
        id=escalation_id(t.notification_id, channel), type=t.type, recipients=[t.user_id],
        created_at=t.created_ms, priority="critical", channels=[channel], title=t.title,
        body=t.body, template=t.template, data=t.data, expires_at=t.expires_ms or None,
        producer=t.producer))


def _receipt(t: DeliveryTask, outcome: Outcome, reason: str, now_ms: int) -> Receipt:
    return Receipt(
        notification_id=t.notification_id, user_id=t.user_id, type=t.type,
        priority=t.priority, channel=t.channel, provider=t.provider, target=t.target_id,
        outcome=outcome.value, reason=reason, created_ms=t.created_ms, event_ms=now_ms,
        attempt=t.attempt)


def settle(results: list[SendResult], now_ms: int, policy: BackoffPolicy,
           rng: random.Random, escalation: dict[str, list[str]] | None = None) -> Settled:
    """Receipts for terminal outcomes; retries planned (or dead-lettered) for retryable
    ones; push tokens the provider says are gone, to retire on notify.devices."""
    out = Settled()
    for r in results:
        try:
            _settle_one(out, r, now_ms, policy, rng, escalation)
        except Exception as e:  # one result's surprise fails that task alone
            log.exception("settling %s raised", r.task.notification_id)
            out.receipts.append(_receipt(r.task, Outcome.FAILED, bounded(
                f"internal error: {type(e).__name__}: {e} (after {r.status} {r.reason})"),
                now_ms))
    return out


def _settle_one(out: Settled, r: SendResult, now_ms: int, policy: BackoffPolicy,
                rng: random.Random, escalation: dict[str, list[str]] | None) -> None:
    t = r.task
    if r.status == "retry":
        env = plan_retry(t, t.provider, r.reason, r.retry_after, now_ms, policy, rng)
        if env.dead_reason:
            out.dead.append(env)
            _escalate(out, t, escalation)
            outcome = (Outcome.EXPIRED if env.dead_reason.startswith("expired")
                       else Outcome.DEAD_LETTERED)
            out.receipts.append(_receipt(t, outcome, f"{env.dead_reason}: {r.reason}", now_ms))
        else:
            out.retry.append(env)
        return
    out.receipts.append(_receipt(t, _OUTCOME.get(r.status, Outcome.FAILED), r.reason, now_ms))
    if r.status in ("failed", "invalid_target"):
        _escalate(out, t, escalation)
    if r.status == "invalid_target" and t.channel == "push":
        d = Device(user_id=t.user_id, token_id=t.target_id, platform=t.provider,
                   token=t.address, active=False)
        out.retire.append((device_key(d), encode_device(d), t.user_id))


def _escalate(out: Settled, t: DeliveryTask, chains: dict[str, list[str]] | None) -> None:
    nxt = escalation_channel(t.type, t.priority, t.channel, chains or DEFAULT_ESCALATION)
    if nxt is not None:
        out.escalate.append((t.user_id, escalation_request(t, nxt)))
