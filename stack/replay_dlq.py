"""`make replay-dlq`: put dead-lettered deliveries back on notify.retry, due now.

Each replayed task keeps its attempt count and error history and gets a fresh retry
deadline.  Progress is kept as the committed offset of consumer group
``notiflow-replay-dlq``, so running it twice does not replay the same letters twice.

    python -m stack.replay_dlq [--brokers HOST:PORT] [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import time

import msgspec
from confluent_kafka import Consumer, Producer, TopicPartition

from notiflow.config import get_settings
from notiflow.topics import DLQ, RETRY, name, partition_for
from schemas.retry import RetryEnvelope, decode_envelope, encode_envelope
from stack.env import ROOT


def brokers_from_env() -> str:
    path = ROOT / "var" / "stack.env"
    if os.environ.get("KAFKA_BROKERS"):
        return os.environ["KAFKA_BROKERS"]
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("KAFKA_BROKERS="):
                return line.split("=", 1)[1]
    return get_settings().kafka_brokers


def replay(brokers: str, dry_run: bool = False) -> int:
    cfg = get_settings()
    dlq, retry = name(DLQ, cfg.topic_prefix), name(RETRY, cfg.topic_prefix)
    c = Consumer({"bootstrap.servers": brokers, "group.id": "notiflow-replay-dlq",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    parts = c.list_topics(dlq, timeout=10).topics[dlq].partitions
    committed = c.committed([TopicPartition(dlq, p) for p in parts], timeout=10)
    ends = {p: c.get_watermark_offsets(TopicPartition(dlq, p), timeout=10)[1] for p in parts}
    c.assign([TopicPartition(dlq, tp.partition, tp.offset if tp.offset >= 0 else 0)
              for tp in committed])
    prod = Producer({"bootstrap.servers": brokers})
    now = int(time.time() * 1000)
    n = 0
    pos = {tp.partition: max(tp.offset, 0) for tp in committed}
    while any(pos[p] < ends[p] for p in parts):
        for m in c.consume(500, 1.0):
            if m.error():
                continue
            pos[m.partition()] = m.offset() + 1
            env = decode_envelope(m.value())
            task = msgspec.structs.replace(env.task, deadline_ms=0)
            again = RetryEnvelope(task=task, due_ms=now, deadline_ms=0)
            n += 1
            if not dry_run:
                prod.produce(retry, encode_envelope(again), task.user_id.encode(),
                             partition=partition_for(task.user_id, cfg.partitions))
    prod.flush(30)
    if not dry_run and n:
        c.commit(offsets=[TopicPartition(dlq, p, o) for p, o in pos.items()], asynchronous=False)
    c.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--brokers", default=None)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    n = replay(args.brokers or brokers_from_env(), args.dry_run)
    print(f"{'would replay' if args.dry_run else 'replayed'} {n} dead letter(s) to notify.retry")


if __name__ == "__main__":
    main()
