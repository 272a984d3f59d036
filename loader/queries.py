"""The named, parameterized queries the loader serves over the network, and nothing else.

No SQL text from the network is run: a client names a query and gives typed parameters,
which are checked here and bound by ClickHouse (``{name:Type}`` placeholders), never
spliced into the text. README, ``make stats``, the dashboard and fan-out status use these
same texts, so a number means the same thing everywhere. Latency is ``event_ms -
created_ms`` (request created -> terminal outcome) and is only meaningful for
``outcome = 'sent'``. Raw SQL is for analysts only, locally (``python -m loader.sql``) or on
a ClickHouse server with a read-only user (docs/analytics.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_MINUTES = 7 * 24 * 60

BY_CHANNEL_OUTCOME = """
SELECT if(channel = '', '(none)', channel) AS channel,
       if(outcome = '', '(none)', outcome) AS outcome,
       count() AS receipts
FROM notiflow.receipts
GROUP BY channel, outcome
ORDER BY channel, outcome
"""

LATENCY_BY_PRIORITY = """
SELECT priority,
       count() AS sent,
       round(quantile(0.5)(latency_ms), 1) AS p50_ms,
       round(quantile(0.99)(latency_ms), 1) AS p99_ms,
       max(latency_ms) AS max_ms
FROM notiflow.receipts
WHERE outcome = 'sent'
GROUP BY priority
ORDER BY priority
"""

LATENCY_BY_PRIORITY_CHANNEL = """
SELECT priority,
       channel,
       count() AS sent,
       round(quantile(0.5)(latency_ms), 1) AS p50_ms,
       round(quantile(0.99)(latency_ms), 1) AS p99_ms
FROM notiflow.receipts
WHERE outcome = 'sent'
GROUP BY priority, channel
ORDER BY priority, channel
"""

DELIVERIES_PER_MINUTE = """
SELECT toStartOfMinute(event_at) AS minute,
       channel,
       countIf(outcome = 'sent') AS sent,
       countIf(outcome = 'failed') AS failed,
       count() AS receipts
FROM notiflow.receipts
WHERE event_at >= now() - INTERVAL 1 HOUR
GROUP BY minute, channel
ORDER BY minute DESC, channel
"""

TOP_FAILURE_REASONS = """
SELECT if(channel = '', '(none)', channel) AS channel, provider, outcome, reason, count() AS receipts
FROM notiflow.receipts
WHERE outcome IN ('failed', 'rejected', 'expired', 'no_target')
GROUP BY channel, provider, outcome, reason
ORDER BY receipts DESC
LIMIT 10
"""

TOTAL = "SELECT count() AS receipts FROM notiflow.receipts"

# a fan-out job's receipts by outcome (gateway GET /v1/fanouts/{id}, `make fanout-status`)
FANOUT_OUTCOMES = """
SELECT outcome, count() AS n
FROM notiflow.receipts
WHERE notification_id = {id:String}
GROUP BY outcome
ORDER BY outcome
"""

# ---- the dashboard (gateway/dashboard.py): read the rollups of loader/rollups.py ----------

DASH_DELIVERIES = """
SELECT toUnixTimestamp(toStartOfInterval(minute, INTERVAL {bucket:UInt32} MINUTE)) AS t,
       if(channel = '', '(none)', channel) AS channel,
       outcome,
       sum(receipts) AS receipts
FROM notiflow.receipts_by_minute
WHERE minute >= toStartOfMinute(now()) - INTERVAL {minutes:UInt32} MINUTE
GROUP BY t, channel, outcome
ORDER BY t, channel, outcome
"""

DASH_LATENCY = """
SELECT priority,
       sum(receipts) AS sent,
       round(quantileTDigestMerge(0.5)(latency_ms), 1) AS p50_ms,
       round(quantileTDigestMerge(0.99)(latency_ms), 1) AS p99_ms
FROM notiflow.receipts_by_minute
WHERE outcome = 'sent' AND minute >= toStartOfMinute(now()) - INTERVAL {minutes:UInt32} MINUTE
GROUP BY priority
ORDER BY indexOf(['critical', 'high', 'normal', 'low'], priority), priority
"""

DASH_FAILURES = """
SELECT if(channel = '', '(none)', channel) AS channel, provider, outcome, reason,
       sum(receipts) AS receipts
FROM notiflow.receipt_reasons_by_minute
WHERE outcome IN ('failed', 'rejected', 'expired', 'no_target', 'dead_lettered')
  AND minute >= toStartOfMinute(now()) - INTERVAL {minutes:UInt32} MINUTE
GROUP BY channel, provider, outcome, reason
ORDER BY receipts DESC, channel, reason
LIMIT {limit:UInt32}
"""


class BadParams(ValueError):
    """A named query's parameters are missing, unknown or out of range; ``field`` says which."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class IntParam:
    """An integer in [lo, hi] (bools are not integers here)."""

    lo: int
    hi: int

    def check(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer in [{self.lo}, {self.hi}]")
        if not self.lo <= value <= self.hi:
            raise ValueError(f"must be in [{self.lo}, {self.hi}], got {value}")
        return value


@dataclass(frozen=True)
class TextParam:
    """A string that fully matches ``pattern``."""

    pattern: re.Pattern[str]

    def check(self, value: object) -> str:
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise ValueError(f"must be a string matching {self.pattern.pattern}")
        return value


# a notification id as producers send it: printable, no control characters, bounded
NOTIFICATION_ID = TextParam(re.compile(r"[^\x00-\x1f\x7f]{1,256}"))
MINUTES = IntParam(1, MAX_MINUTES)


@dataclass(frozen=True)
class Named:
    """One query: its SQL (placeholders ``{name:Type}``) and each parameter's check."""

    sql: str
    params: Mapping[str, IntParam | TextParam] = field(default_factory=dict)
    doc: str = ""

    def bind(self, given: object) -> dict[str, Any]:
        """The checked parameters, or BadParams naming the first bad one."""
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise BadParams("params", "must be an object")
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise BadParams(f"params.{unknown[0]}", "unknown parameter")
        out: dict[str, Any] = {}
        for name, kind in self.params.items():
            if name not in given:
                raise BadParams(f"params.{name}", "required")
            try:
                out[name] = kind.check(given[name])
            except ValueError as exc:
                raise BadParams(f"params.{name}", str(exc)) from None
        return out


NAMED: dict[str, Named] = {
    "by_channel_outcome": Named(BY_CHANNEL_OUTCOME, doc="receipts by channel and outcome"),
    "latency_by_priority": Named(LATENCY_BY_PRIORITY, doc="latency of sent, per priority"),
    "latency_by_priority_channel": Named(LATENCY_BY_PRIORITY_CHANNEL,
                                         doc="latency of sent, per priority and channel"),
    "deliveries_per_minute": Named(DELIVERIES_PER_MINUTE, doc="the last hour, per minute"),
    "top_failure_reasons": Named(TOP_FAILURE_REASONS, doc="the 10 most frequent reasons"),
    "total": Named(TOTAL, doc="all receipts"),
    "fanout_outcomes": Named(FANOUT_OUTCOMES, {"id": NOTIFICATION_ID},
                             doc="one notification's receipts by outcome"),
    "dash_deliveries": Named(DASH_DELIVERIES, {"minutes": MINUTES, "bucket": MINUTES},
                             doc="rollup: receipts per bucket, channel, outcome"),
    "dash_latency": Named(DASH_LATENCY, {"minutes": MINUTES},
                          doc="rollup: p50/p99 of sent per priority"),
    "dash_failures": Named(DASH_FAILURES, {"minutes": MINUTES, "limit": IntParam(1, 100)},
                           doc="rollup: top failure reasons"),
}
