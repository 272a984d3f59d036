"""One channel served by an ordered chain of providers, each behind a circuit breaker.

Email: SendGrid -> Amazon SES -> Mailgun; SMS: Twilio -> Vonage (the order is
configuration).  A batch goes to the first provider whose breaker lets it through; the
sends it answers with a retryable failure (429/5xx/timeout) go on to the next provider
in the same write; what no provider took stays ``retry`` and goes to notify.retry.
Only retryable failures count against a breaker: a bad address says nothing about the
provider's health.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable

import msgspec

from notiflow.config import Settings
from notiflow.metrics import BREAKER_STATE
from operators.breaker import CircuitBreaker
from schemas.task import DeliveryTask
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
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self._cfg = cfg
        self._chain = chain
        self._clock = clock_ms
        self._mods = {p: importlib.import_module(MODULES[p]) for p in chain}
        self._clients = {p: self._mods[p].make_client(cfg) for p in chain}
        self.breakers = {p: new_breaker(cfg, p) for p in chain}
        self._limits = ProviderLimits(cfg)  # shared token buckets: sends wait for tokens

    def send(self, tasks: list[DeliveryTask]) -> list[SendResult]:
        done: list[SendResult] = []
        pending = [SendResult(t, "retry", "every provider's circuit breaker is open")
                   for t in tasks]
        for provider in self._chain:
            if not pending:
                break
            b = self.breakers[provider]
            if not b.allow(self._clock()):
                continue
            batch = [msgspec.structs.replace(r.task, provider=provider) for r in pending]
            results, deferred = self._limits.send(
                provider, batch,
                lambda part, p=provider: self._mods[p].send(self._clients[p], part, self._cfg))
            retry = [r for r in results if r.status == "retry"]
            # one failing batch = one failure: a provider is unhealthy when nothing gets
            # through (sends deferred for want of tokens say nothing about its health)
            if retry and len(retry) == len(results):
                b.record_failure(self._clock())
            elif results:
                b.record_success(self._clock())
            done += [r for r in results if r.status != "retry"]
            pending = retry + deferred  # a saturated provider spills over to the next
        return done + pending

    def close(self) -> None:
        self._limits.close()
        for c in self._clients.values():
            close = getattr(c, "close", None)
            if close:
                close()
