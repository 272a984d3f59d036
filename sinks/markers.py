"""Idempotent sent-markers per (notification, channel, target), in Redis.

A replay after a crash (the last epoch is processed again) must not send twice: before a
batch is sent, tasks whose marker exists are skipped; after the provider accepts a task,
its marker is set with a TTL.  The window left is one crash between a provider's answer
and the marker write: at-least-once, never lost.

If Redis is down the sink keeps delivering without markers (a duplicate is better than a
loss) and counts it in ``unavailable``.
"""

from __future__ import annotations

import logging

import redis

from schemas.identity import SENT, send_key
from schemas.task import DeliveryTask

log = logging.getLogger(__name__)


def marker_key(t: DeliveryTask) -> str:
    # the router names each send (schemas/identity.py: producer, event, id, user, channel,
    # target); a task from before that has none and is named from its fields
    return SENT + (t.key or send_key(t.producer, t.type, None, t.notification_id, t.user_id,
                                     t.channel, t.target_id))


class SentMarkers:
    def __init__(self, url: str, ttl_s: int) -> None:
        self._r = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._ttl = ttl_s
        self.unavailable = 0  # batches sent without markers because Redis was down

    def unsent(self, tasks: list[DeliveryTask]) -> tuple[list[DeliveryTask], list[DeliveryTask]]:
        """(to send, already sent)."""
        if not tasks:
            return [], []
        try:
            found = self._r.mget([marker_key(t) for t in tasks])
        except redis.RedisError as e:
            self.unavailable += 1
            log.warning("sent-markers unavailable (%s): sending %d without dedup", e, len(tasks))
            return tasks, []
        todo = [t for t, f in zip(tasks, found, strict=True) if f is None]
        done = [t for t, f in zip(tasks, found, strict=True) if f is not None]
        return todo, done

    def mark(self, tasks: list[DeliveryTask]) -> None:
        if not tasks:
            return
        try:
            p = self._r.pipeline(transaction=False)
            for t in tasks:
                p.set(marker_key(t), b"1", ex=self._ttl)
            p.execute()
        except redis.RedisError as e:
            self.unavailable += 1
            log.warning("sent-markers unavailable (%s): %d sends not marked", e, len(tasks))

    def close(self) -> None:
        self._r.close()
