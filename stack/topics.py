"""Create every notiflow topic (idempotent) and wait until the broker's metadata shows them.

Why here and not by auto-create: Tansu does not auto-create, and the user-keyed topics must
share one partition count (the settings join reads settings[p] and devices[p] beside
requests[p]), so a topic that exists with another count is an error, not a detail.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from notiflow.config import Settings
from notiflow.topics import ALL, name


def wanted_topics(settings: Settings, replication_factor: int = 1) -> dict[str, NewTopic]:
    return {
        name(short, settings.topic_prefix): NewTopic(
            name(short, settings.topic_prefix), settings.partitions, replication_factor,
            config={"cleanup.policy": "compact"} if compacted else {})
        for short, _by_user, compacted in ALL
    }


def create_topics(brokers: str, settings: Settings, timeout: float = 30.0,
                  replication_factor: int = 1) -> list[str]:
    """Create the topics of ``notiflow.topics.ALL`` that do not exist yet; return all names."""
    admin = AdminClient({"bootstrap.servers": brokers})
    wanted = wanted_topics(settings, replication_factor)
    existing = admin.list_topics(timeout=10).topics
    todo = [t for n, t in wanted.items() if n not in existing]
    if todo:
        for topic, fut in admin.create_topics(todo, operation_timeout=timeout).items():
            try:
                fut.result()
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise RuntimeError(f"creating {topic}: {e}") from e
    deadline = time.monotonic() + timeout
    while True:
        listed = admin.list_topics(timeout=5).topics
        missing = [n for n in wanted if n not in listed or listed[n].error is not None]
        wrong = {n: len(listed[n].partitions) for n in wanted if n not in missing
                 and len(listed[n].partitions) != settings.partitions}
        if not missing and not wrong:
            return sorted(wanted)
        if time.monotonic() > deadline:
            if missing:
                raise TimeoutError(f"topics not visible after {timeout}s: {missing}")
            raise RuntimeError(f"topics exist with a partition count other than "
                               f"settings.partitions={settings.partitions}: {wrong}")
        time.sleep(0.05)
