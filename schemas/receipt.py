"""Delivery receipt, version 1: one row per terminal outcome, in ClickHouse notiflow.receipts.

Receipts travel on notify.receipts as JSONEachRow text: one Kafka message may carry many
rows, one per line, so the loader inserts them with ``FORMAT JSONEachRow`` unchanged (and
a ClickHouse Kafka engine table could read the same topic in production).
Times are epoch milliseconds; latency = ``event_ms - created_ms``.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Outcome(StrEnum):
    SENT = "sent"  # accepted by the provider (or written to the in-app inbox)
    SUPPRESSED = "suppressed"  # user preference: channel off or type opted out
    DUPLICATE = "duplicate"  # the same event was already handled inside the dedup TTL
    REJECTED = "rejected"  # invalid request, see reason
    FAILED = "failed"  # provider said no for good (see reason)
    NO_TARGET = "no_target"  # channel wanted but no device / address / phone
    EXPIRED = "expired"  # expires_at passed before it could be sent (also while held)
    DEAD_LETTERED = "dead_lettered"  # retried until the deadline, then sent to notify.dlq
    # combined with others of the same user and collapse key into one notification, whose
    # id the reason names (that one has its own per-channel receipts)
    BUNDLED = "bundled"


class Receipt(msgspec.Struct, frozen=True, array_like=False, omit_defaults=False):
    notification_id: str
    user_id: str
    type: str
    priority: str
    channel: str  # push | email | sms | inapp | "" (before routing)
    provider: str  # apns | fcm | sendgrid | twilio | redis | ""
    target: str  # device token id, email, phone, or ""
    outcome: str
    reason: str
    created_ms: int
    event_ms: int
    attempt: int = 1
    v: int = 1


_encoder = msgspec.json.Encoder()


def encode_rows(rows: list[Receipt]) -> bytes:
    """JSONEachRow: one JSON object per line."""
    return b"\n".join(_encoder.encode(r) for r in rows)


# ClickHouse DDL, shared by the loader (chDB or server) and the docs.
RECEIPTS_DDL = """
CREATE TABLE IF NOT EXISTS notiflow.receipts
(
    notification_id String,
    user_id String,
    type LowCardinality(String),
    priority LowCardinality(String),
    channel LowCardinality(String),
    provider LowCardinality(String),
    target String,
    outcome LowCardinality(String),
    reason String,
    created_ms UInt64,
    event_ms UInt64,
    attempt UInt16 DEFAULT 1,
    v UInt8 DEFAULT 1,
    created_at DateTime64(3, 'UTC') MATERIALIZED fromUnixTimestamp64Milli(toInt64(created_ms)),
    event_at DateTime64(3, 'UTC') MATERIALIZED fromUnixTimestamp64Milli(toInt64(event_ms)),
    latency_ms Int64 MATERIALIZED toInt64(event_ms) - toInt64(created_ms)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(event_at)
ORDER BY (channel, outcome, event_ms)
"""
