"""Topic names and the user -> partition rule every producer must share.

requests, critical, settings, devices, subscriptions and presence have the same partition
count and are all partitioned by user id, so one source partition can read a user's settings and devices
before that user's requests (see dataflows/).  ``partition_for`` is CRC32 of the user id,
which is librdkafka's default (``consistent_random``) for keyed messages: a confluent-kafka
producer keyed by user id lands on the same partition without being told.
"""

from __future__ import annotations

from zlib import crc32

REQUESTS = "requests"
CRITICAL = "critical"
SETTINGS = "settings"
DEVICES = "devices"
REJECTED = "rejected"
RECEIPTS = "receipts"
RETRY = "retry"
DLQ = "dlq"
SUBSCRIPTIONS = "subscriptions"  # "user follows target", keyed user|target (audiences)
PRESENCE = "presence"  # last time a user's app was open (hybrid fan-out)

# (short name, partitioned by user, compacted)
ALL: tuple[tuple[str, bool, bool], ...] = (
    (REQUESTS, True, False),
    (CRITICAL, True, False),
    (SETTINGS, True, True),
    (DEVICES, True, True),
    (REJECTED, False, False),
    (RECEIPTS, False, False),
    (RETRY, True, False),
    (DLQ, False, False),
    (SUBSCRIPTIONS, True, True),
    (PRESENCE, True, True),  # only the latest value per user matters
)


def name(short: str, prefix: str = "notify.") -> str:
    return f"{prefix}{short}"


def partition_for(user_id: str, partitions: int) -> int:
    """The partition of every user-keyed topic that holds ``user_id``."""
    return crc32(user_id.encode()) % partitions
