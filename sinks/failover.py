"""One channel served by an ordered chain of providers, each behind a circuit breaker.

Email: SendGrid -> Amazon SES -> Mailgun; SMS: Twilio -> Vonage (the order is
configuration).  A batch goes to the first provider whose breaker lets it through.

The failover rule (no email or SMS provider offers an idempotency key, so a second
provider sending what the first took is a second message to the person):

- fail over (to the next provider, in the same write) only on an answer that says the
  provider did not take the send: 429, 5xx, an error in a 200 body (Vonage), a
  rate-limit deferral, or a connection never made (refused, connect timeout);
- a send without an answer after the request went out (a read timeout, a reset: the
  provider may have taken it, ``sinks/no_answer.py``) stays with that provider: it goes
  to notify.retry and its retries go to that provider only (never to another, even
  while its breaker is open), so the most it can cost is one re-send by the same
  provider, and only of what was on the wire when the answer was lost.

What no provider took stays ``retry`` and goes to notify.retry.  Only retryable failures
count against a breaker: a bad address says nothing about the provider's health.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace

import msgspec

from notiflow.config import Settings
from notiflow.metrics import BREAKER_STATE
from operators.breaker import CircuitBreaker
from schemas.task import DeliveryTask
from sinks import no_answer
from sinks.rate_limit import ProviderLimits
from sinks.results import SendResult

log = logging.getLogger(__name__)

MODULES = {"sendgrid": "sinks.email_sendgrid", "ses": "sinks.email_ses",
           "mailgun": "sinks.email_mailgun", "twilio": "sinks.sms_twilio",
           "vonage": "sinks.sms_vonage"}
_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}


def _on_change(old: str, new: str, provider: str) -> None:
    BREAKER_STATE.labels(provider).set(_STATE_VALUE.get(str(new), -1))
    log.warning("circuit breaker %s: %s -> %s", provider, old, new)


def new_breaker(cfg: Settings, provider: str) -> CircuitBreaker:
    b = CircuitBreaker(provider=provider, failure_threshold=cfg.breaker_failures,
                       open_s=cfg.breaker_open_s, on_change=_on_change)
    BREAKER_STATE.labels(provider).set(0)
    return b


class FailoverSender:
    def __init__(self, cfg: Settings, chain: list[str],
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 limits: ProviderLimits | None = None) -> None:
        self._cfg = cfg
        self._chain = chain
        self._clock = clock_ms
        self._mods = {p: importlib.import_module(MODULES[p]) for p in chain}
        self._clients = {p: self._mods[p].make_client(cfg) for p in chain}
        self.breakers = {p: new_breaker(cfg, p) for p in chain}
        # shared token buckets: sends wait for tokens
        self._limits = limits if limits is not None else ProviderLimits(cfg)

    def _pinned_to(self, t: DeliveryTask) -> str | None:
        """The provider a retried task must stay with: its last attempt there got no
        answer after the request went out (the provider may have taken it)."""
        if t.errors and t.provider in self.breakers and no_answer.maybe_taken(t.errors[-1]):
            return t.provider
        return None

    def send(self, tasks: list[DeliveryTask]) -> list[SendResult]:
        """Results in no particular order; the failover rule is the module's docstring."""
        done: list[SendResult] = []
        pinned: dict[str, list[DeliveryTask]] = {}
        free: list[DeliveryTask] = []
        for t in tasks:
            p = self._pinned_to(t)
            if p is None:
                free.append(t)
            else:
                pinned.setdefault(p, []).append(t)
        pending = [SendResult(t, "retry", "every provider's circuit breaker is open")
                   for t in free]
        for provider in self._chain:
            mine = pinned.pop(provider, [])
            if not pending and not mine:
                continue
            b = self.breakers[provider]
            if not b.allow(self._clock()):
                done += [_stay(SendResult(t, "retry", f"{provider} circuit breaker is open"),
                               provider) for t in mine]
                continue
            own = {_key(t) for t in mine}
            batch = [msgspec.structs.replace(r.task, provider=provider) for r in pending]
            results, deferred = self._limits.send(
                provider, batch + mine,
                lambda part, p=provider: self._mods[p].send(self._clients[p], part, self._cfg))
            retry = [r for r in results if r.status == "retry"]
            # one failing batch = one failure: a provider is unhealthy when nothing gets
            # through (sends deferred for want of tokens say nothing about its health)
            if retry and len(retry) == len(results):
                b.record_failure(self._clock())
            elif results:
                b.record_success(self._clock())
            done += [r for r in results if r.status != "retry"]
            pending = []
            for r in retry + deferred:
                if _key(r.task) in own or no_answer.maybe_taken(r.reason):
                    done.append(_stay(r, provider))  # wait for this provider: never another
                else:
                    pending.append(r)  # it said no (or had no tokens): the next one may
        return done + pending

    def close(self) -> None:
        self._limits.close()
        for c in self._clients.values():
            close = getattr(c, "close", None)
            if close:
                close()


def _stay(r: SendResult, provider: str) -> SendResult:
    """``r`` as a retry that stays with ``provider``: its reason (the retried task's next
    error line) keeps saying the provider may have taken it."""
    if no_answer.maybe_taken(r.reason):
        return r
    return replace(r, reason=f"{provider} {no_answer.MAYBE_TAKEN} before; now: {r.reason}")


def _key(t: DeliveryTask) -> tuple[str, str, str]:
    return t.notification_id, t.user_id, t.target_id
