"""Which provider serves a task next: the configured order, minus open breakers and tried ones.

Email is SendGrid -> SES -> Mailgun and SMS Twilio -> Vonage (the order is configuration).
A task goes to the first provider whose breaker lets it through and that has not been
tried for this task yet, so one task never bounces back to a provider that just failed
it.  ``record_batch`` keeps the one rule for what a batch tells a breaker.
"""

from __future__ import annotations

from collections.abc import Mapping

from operators.breaker import CircuitBreaker


def pick_provider(chain: list[str], breakers: Mapping[str, CircuitBreaker], now_ms: int,
                  tried: set[str]) -> str | None:
    """The first provider in ``chain`` not in ``tried`` whose breaker allows; None if none.

    ``allow`` may claim a half-open breaker's single probe, so breakers are asked in order
    and only until one says yes: a provider that is not picked never has a probe claimed.

    Args:
        chain: provider names in failover order.
        breakers: each provider's breaker (a provider without one is always allowed).
        now_ms: the caller's clock.
        tried: providers already tried for this task.
    """
    for provider in chain:
        if provider in tried:
            continue
        b = breakers.get(provider)
        if b is None or b.allow(now_ms):
            return provider
    return None


def record_batch(breaker: CircuitBreaker, answered: int, retryable: int, now_ms: int) -> None:
    """Tell a breaker what one batch to its provider did.

    One batch is one outcome: the provider is unhealthy only when every request failed
    retryably (429/5xx/timeout).  A definite answer, even a permanent failure such as a
    bad address, shows the provider is up, so it counts as a success (and settles a
    half-open probe).  An empty batch records nothing.

    Args:
        breaker: the provider's breaker.
        answered: requests with a definite answer: sent, or failed permanently.
        retryable: requests that failed with 429/5xx/timeout.
        now_ms: the caller's clock.
    """
    if answered:
        breaker.record_success(now_ms)
    elif retryable:
        breaker.record_failure(now_ms)
