"""Rollups of notiflow.receipts (materialized views) and the TTL on the raw receipts.

Why: the dashboard and analysts mostly ask "how many, how fast, why not" per minute, and a
raw row per outcome grows by billions a day. Two AggregatingMergeTree tables, fed by
materialized views at insert time, answer those questions from a few rows per minute:

* ``notiflow.receipts_by_minute``: per minute, channel, type, outcome, provider and
  priority, the receipt count and a t-digest state of latency (any quantile is read back
  with ``quantileTDigestMerge(level)``).
* ``notiflow.receipt_reasons_by_minute``: the receipts that were not sent, per minute,
  channel, provider, outcome, type and reason, with the count and a ``uniq`` state of
  users (top failure reasons, which types people opt out of). ``bundled`` receipts are
  left out: their reason names the bundle's id, one distinct reason per bundle.

Raw receipts keep ``receipts_ttl_days`` (default 30) and the rollups ``rollup_ttl_days``
(default 400): a TTL delete on the raw table does not touch the rollups.

A rollup created next to existing receipts is back-filled once from them, before its view
exists, so no row is counted twice; this runs before the loader ingests anything. The
same DDL runs on chDB and on a ClickHouse server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

RAW_TABLE = "notiflow.receipts"


class _Client(Protocol):
    def command(self, cmd: str) -> object: ...


@dataclass(frozen=True)
class Rollup:
    table: str  # notiflow.<name>
    columns: str  # the target table's column list (inside the parentheses)
    order_by: str
    select: str  # what the view inserts, per block of raw receipts

    @property
    def view(self) -> str:
        return f"{self.table}_mv"

    def table_ddl(self, ttl_days: int) -> str:
        ttl = f"\nTTL minute + INTERVAL {ttl_days} DAY" if ttl_days > 0 else ""
        return (f"CREATE TABLE IF NOT EXISTS {self.table}\n({self.columns})\n"
                f"ENGINE = AggregatingMergeTree\nPARTITION BY toYYYYMM(minute)\n"
                f"ORDER BY ({self.order_by}){ttl}")

    def view_ddl(self) -> str:
        return f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.view} TO {self.table} AS\n{self.select}"


BY_MINUTE = Rollup(
    table="notiflow.receipts_by_minute",
    columns="""
    minute DateTime('UTC'),
    channel LowCardinality(String),
    outcome LowCardinality(String),
    type LowCardinality(String),
    provider LowCardinality(String),
    priority LowCardinality(String),
    receipts SimpleAggregateFunction(sum, UInt64),
    latency_ms AggregateFunction(quantileTDigest, Int64)
""",
    order_by="minute, channel, outcome, type, provider, priority",
    select=f"""SELECT toStartOfMinute(event_at) AS minute, channel, outcome, type, provider, priority,
       count() AS receipts, quantileTDigestState(latency_ms) AS latency_ms
FROM {RAW_TABLE}
GROUP BY minute, channel, outcome, type, provider, priority""",
)

REASONS_BY_MINUTE = Rollup(
    table="notiflow.receipt_reasons_by_minute",
    columns="""
    minute DateTime('UTC'),
    channel LowCardinality(String),
    provider LowCardinality(String),
    outcome LowCardinality(String),
    type LowCardinality(String),
    reason String,
    receipts SimpleAggregateFunction(sum, UInt64),
    users AggregateFunction(uniq, String)
""",
    order_by="minute, outcome, channel, provider, type, reason",
    select=f"""SELECT toStartOfMinute(event_at) AS minute, channel, provider, outcome, type, reason,
       count() AS receipts, uniqState(user_id) AS users
FROM {RAW_TABLE}
WHERE outcome NOT IN ('sent', 'bundled')
GROUP BY minute, channel, provider, outcome, type, reason""",
)

ROLLUPS = (BY_MINUTE, REASONS_BY_MINUTE)

_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)")


def raw_ttl_ddl(days: int) -> str:
    """The ALTER that sets (days > 0) or removes the TTL of the raw receipts."""
    if days > 0:
        return f"ALTER TABLE {RAW_TABLE} MODIFY TTL toDateTime(event_at) + INTERVAL {days} DAY"
    return f"ALTER TABLE {RAW_TABLE} REMOVE TTL"


def current_ttl_days(engine_full: str) -> int:
    """The TTL in days that ``system.tables.engine_full`` shows, 0 when there is none."""
    m = _TTL_DAYS.search(engine_full)
    return int(m.group(1)) if m else 0


def _exists(client: _Client, table: str) -> bool:
    db, name = table.split(".")
    return int(client.command(  # type: ignore[call-overload]
        f"SELECT count() FROM system.tables WHERE database = '{db}' AND name = '{name}'")) > 0


def ensure_raw_ttl(client: _Client, days: int) -> bool:
    """Set the raw receipts' TTL when it differs (an ALTER rewrites old parts, so only then).
    Returns True when it changed."""
    engine = str(client.command(
        "SELECT engine_full FROM system.tables WHERE database = 'notiflow' AND name = 'receipts'"))
    if current_ttl_days(engine) == max(days, 0):
        return False
    client.command(raw_ttl_ddl(days))
    return True


def ensure_rollups(client: _Client, ttl_days: int) -> list[str]:
    """Create the rollup tables and their views; back-fill a new one from the raw receipts.
    Call before anything inserts receipts. Returns the tables that were back-filled."""
    filled = []
    for r in ROLLUPS:
        new = not _exists(client, r.table)
        client.command(r.table_ddl(ttl_days))
        if new and not _exists(client, r.view):
            client.command(f"INSERT INTO {r.table} {r.select}")
            filled.append(r.table)
        client.command(r.view_ddl())
    return filled
