"""The analyst SQL over notiflow.receipts, as named constants.

README, ``make stats`` and the dashboard use these same texts, so a number means the same
thing everywhere. Latency is ``event_ms - created_ms`` (request created -> terminal outcome)
and is only meaningful for ``outcome = 'sent'``.
"""

from __future__ import annotations

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

ALL: dict[str, str] = {
    "by_channel_outcome": BY_CHANNEL_OUTCOME,
    "latency_by_priority": LATENCY_BY_PRIORITY,
    "latency_by_priority_channel": LATENCY_BY_PRIORITY_CHANNEL,
    "deliveries_per_minute": DELIVERIES_PER_MINUTE,
    "top_failure_reasons": TOP_FAILURE_REASONS,
}

# ---- the dashboard (gateway/dashboard.py): read the rollups of loader/rollups.py ----------
# Templates: {minutes} (window), {bucket} (minutes per point), {limit}; all validated ints.

DASH_DELIVERIES = """
SELECT toUnixTimestamp(toStartOfInterval(minute, INTERVAL {bucket} MINUTE)) AS t,
       if(channel = '', '(none)', channel) AS channel,
       outcome,
       sum(receipts) AS receipts
FROM notiflow.receipts_by_minute
WHERE minute >= toStartOfMinute(now()) - INTERVAL {minutes} MINUTE
GROUP BY t, channel, outcome
ORDER BY t, channel, outcome
"""

DASH_LATENCY = """
SELECT priority,
       sum(receipts) AS sent,
       round(quantileTDigestMerge(0.5)(latency_ms), 1) AS p50_ms,
       round(quantileTDigestMerge(0.99)(latency_ms), 1) AS p99_ms
FROM notiflow.receipts_by_minute
WHERE outcome = 'sent' AND minute >= toStartOfMinute(now()) - INTERVAL {minutes} MINUTE
GROUP BY priority
ORDER BY indexOf(['critical', 'high', 'normal', 'low'], priority), priority
"""

DASH_FAILURES = """
SELECT if(channel = '', '(none)', channel) AS channel, provider, outcome, reason,
       sum(receipts) AS receipts
FROM notiflow.receipt_reasons_by_minute
WHERE outcome IN ('failed', 'rejected', 'expired', 'no_target', 'dead_lettered')
  AND minute >= toStartOfMinute(now()) - INTERVAL {minutes} MINUTE
GROUP BY channel, provider, outcome, reason
ORDER BY receipts DESC, channel, reason
LIMIT {limit}
"""
