"""Escalation: where a critical notification goes when its channel failed or had no target.

A critical notification (a login code, "your ride is here") must reach the user, so when
push fails or the user has no device it goes on down a per-type chain of channels, e.g.
``{"auth.code": ["push", "sms"], "ride.arriving": ["push", "sms", "email"]}``, with "*"
for every other critical type (push -> sms unless configured).  Anything not critical
never escalates: SMS costs money and attention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas.request import is_critical

DEFAULT_ESCALATION: dict[str, list[str]] = {"*": ["push", "sms"]}


def chain_for(task_type: str, chains: Mapping[str, Sequence[str]]) -> Sequence[str]:
    """The chain for ``task_type``: its own, else "*", else the built-in push -> sms.

    An explicit empty chain (``{"*": []}``) turns escalation off.
    """
    if task_type in chains:
        return chains[task_type]
    if "*" in chains:
        return chains["*"]
    return DEFAULT_ESCALATION["*"]


def escalate(task_type: str, priority: str, failed_channel: str,
             chains: Mapping[str, Sequence[str]] | None = None) -> str | None:
    """The channel to try after ``failed_channel``, or None (not critical, or chain ends).

    Args:
        task_type: the notification type, e.g. "auth.code".
        priority: critical | high | normal | low; only "critical" escalates.
        failed_channel: the channel that failed or had no target.
        chains: per-type channel chains, "*" for the rest; None: push -> sms.
    """
    if not is_critical(priority):
        return None
    chain = chain_for(task_type, DEFAULT_ESCALATION if chains is None else chains)
    if failed_channel not in chain:
        return None
    i = list(chain).index(failed_channel)
    return chain[i + 1] if i + 1 < len(chain) else None
