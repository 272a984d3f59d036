"""What to do with a send that may work later: when to try again, or give up to the DLQ.

Retries use the injected backoff policy (exponential, full jitter, Retry-After as a
floor) until the task's deadline (24 h after its first retryable failure, configurable)
or its own ``expires_ms``, whichever comes first; then the task is dead-lettered with
every attempt's error.  A non-critical retry that would fall due inside the user's quiet
hours (as they were when it was routed: ``task.quiet``) waits for their end, like a held
notification; if it expires first, it is dead-lettered as expired.
"""

from __future__ import annotations

import random

import msgspec

from operators.backoff import BackoffPolicy
from operators.quiet_hours import quiet_end_ms
from schemas.limits import CONTROL_RE, bounded
from schemas.request import is_critical
from schemas.retry import RetryEnvelope
from schemas.task import MAX_ATTEMPTS, DeliveryTask

# error lines a task carries: the first attempts' (what went wrong to begin with) and the
# latest ones', with one line saying that some were left out between them.  Each line is
# bounded (a provider's error text is as long as the provider makes it), so an envelope
# this flow writes always passes read_envelope's limits (a task's error lines, its size).
FIRST_ERRORS = 3
LAST_ERRORS = 6
LEFT_OUT = "... (errors of the attempts between left out)"


def error_line(attempt: int, now_ms: int, provider: str, reason: str) -> str:
    """One attempt's error: one line (control characters become spaces), bounded."""
    return bounded(CONTROL_RE.sub(" ", f"attempt {attempt} at {now_ms} {provider}: {reason}"))


def kept_errors(errors: tuple[str, ...]) -> tuple[str, ...]:
    """The first ``FIRST_ERRORS`` and last ``LAST_ERRORS`` lines, and ``LEFT_OUT`` between."""
    if len(errors) <= FIRST_ERRORS + 1 + LAST_ERRORS:
        return errors
    return (*errors[:FIRST_ERRORS], LEFT_OUT, *errors[-LAST_ERRORS:])


def plan_retry(task: DeliveryTask, provider: str, reason: str, retry_after: float | None,
               now_ms: int, policy: BackoffPolicy, rng: random.Random) -> RetryEnvelope:
    """The envelope for notify.retry, or (``dead_reason`` set) for notify.dlq."""
    errors = kept_errors((*task.errors, error_line(task.attempt, now_ms, provider, reason)))
    deadline = task.deadline_ms or now_ms + int(policy.deadline_s * 1000)
    due = now_ms + int(policy.delay_s(task.attempt, rng, retry_after) * 1000)
    if task.quiet is not None and not is_critical(task.priority):
        due = quiet_end_ms(task.quiet, due) or due
    nxt = msgspec.structs.replace(task, attempt=min(task.attempt + 1, MAX_ATTEMPTS),
                                  errors=errors, deadline_ms=deadline)
    dead = ""
    if task.attempt >= MAX_ATTEMPTS:
        dead = f"still failing after {MAX_ATTEMPTS} attempts"
    elif task.expires_ms and due >= task.expires_ms:
        dead = "expired before the next retry"
    elif due > deadline:
        dead = f"still failing after {policy.deadline_s / 3600:g} h of retries"
    return RetryEnvelope(task=nxt, due_ms=due, deadline_ms=deadline, dead_reason=dead)
