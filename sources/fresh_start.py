"""Where a lane's requests begin when it starts without a snapshot (a new or lost recovery
folder), per ``NOTIFLOW_FRESH_START``.

Why not the beginning of the topic: that replays up to the retention period, while the
sent-markers that would catch the replay last ``sent_marker_ttl_s`` (48 h).

* ``committed`` (default): the offsets the source commits, one snapshot behind, to its
  consumer group (``source_group``); a partition the group has none for falls back to
  ``time``.  Fastest; what only the lost snapshot held (quiet-hours and send_at holds, open
  bundles) is not read again.
* ``time``: the first request newer than now - the sent-marker TTL (``offsets_for_times``):
  everything that can be replayed is still covered by the sent-markers, and what the lost
  snapshot held is read again.
* ``earliest``: the beginning (tests, development).

Control topics (settings, devices, subscriptions, presence) always load from the beginning:
they are compacted state, not a stream.
"""

from __future__ import annotations

from typing import Protocol, get_args

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from notiflow.config import Settings

# the rules, as the setting spells them
FRESH_STARTS: tuple[str, ...] = get_args(Settings.model_fields["fresh_start"].annotation)


def source_group(requests_topic: str) -> str:
    """The consumer group a lane's source commits to: one per lane and topic prefix (the
    requests topic's name holds both)."""
    return f"notiflow-source.{requests_topic}"


class OffsetsClient(Protocol):
    """The consumer calls a fresh start needs (a confluent_kafka Consumer in the group)."""

    def committed(self, partitions: list[TopicPartition], timeout: float | None = None
                  ) -> list[TopicPartition]: ...

    def offsets_for_times(self, partitions: list[TopicPartition], timeout: float | None = None
                          ) -> list[TopicPartition]: ...

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]: ...


def fresh_offset(client: OffsetsClient, topic: str, partition: int, rule: str,
                 now_ms: int, marker_ttl_s: float, timeout_s: float = 10.0) -> tuple[int, str]:
    """The offset requests[partition] starts at without a snapshot, and why (for the log)."""
    if rule not in FRESH_STARTS:
        raise ValueError(f"fresh start must be one of {FRESH_STARTS}, not {rule!r}")
    if rule == "earliest":
        return OFFSET_BEGINNING, "earliest"
    why = ""
    if rule == "committed":
        c = client.committed([TopicPartition(topic, partition)], timeout=timeout_s)[0]
        if c.error is None and c.offset >= 0:
            return c.offset, "committed"
        why = "committed: the group has none, so "
    since = now_ms - int(marker_ttl_s * 1000)
    t = client.offsets_for_times([TopicPartition(topic, partition, since)],
                                 timeout=timeout_s)[0]
    if t.error is None and t.offset >= 0:
        return t.offset, f"{why}time: first request since {since} ms"
    # no request that recent: start at the end (a number, not OFFSET_END, which would be
    # resolved later and skip what is published meanwhile)
    _low, high = client.get_watermark_offsets(TopicPartition(topic, partition),
                                              timeout=timeout_s, cached=False)
    return max(high, 0), f"{why}time: no request since {since} ms, so the end"
