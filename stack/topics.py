"""Create every notiflow topic (idempotent) and wait until the broker lists them."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from notiflow.config import Settings
from notiflow.topics import ALL, name


def create_topics(brokers: str, settings: Settings, timeout: float = 30.0) -> list[str]:
    admin = AdminClient({"bootstrap.servers": brokers})
    wanted = {
        name(short, settings.topic_prefix): NewTopic(
            name(short, settings.topic_prefix), settings.partitions, 1,
            config={"cleanup.policy": "compact"} if compacted else {})
        for short, _by_user, compacted in ALL
    }
    existing = set(admin.list_topics(timeout=10).topics)
    todo = [t for n, t in wanted.items() if n not in existing]
    if todo:
        for topic, fut in admin.create_topics(todo).items():
            try:
                fut.result()
            except KafkaException as e:
                if "already exists" not in str(e).lower() and "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise RuntimeError(f"creating {topic}: {e}") from e
    deadline = time.time() + timeout
    while time.time() < deadline:
        listed = admin.list_topics(timeout=5).topics
        if all(n in listed and len(listed[n].partitions) == settings.partitions for n in wanted):
            return sorted(wanted)
        time.sleep(0.1)
    raise TimeoutError(f"topics not visible after {timeout}s: {sorted(wanted)}")
