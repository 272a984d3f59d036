"""`make sample`: publish a sample user, an APNs device and one notification per channel.

It is what an upstream producer does: settings and devices on their compacted topics (key
and partition per notiflow.topics and schemas/device.py), then requests keyed by user id,
encoded with the schemas/ encoders.  Where the stack runs comes from var/stack.env (written
by `make run`), else from the environment.
"""

from __future__ import annotations

import os
import time
import uuid

from confluent_kafka import Producer
from rich.console import Console

from notiflow.config import get_settings
from notiflow.topics import DEVICES, REQUESTS, SETTINGS, name, partition_for
from schemas.device import Device, device_key, encode_device
from schemas.request import CHANNELS, NotificationRequest, encode_request
from schemas.settings import UserSettings, encode_settings
from stack.env import ROOT, read_env_file

USER = "sample-user"


def main() -> None:
    env = read_env_file(ROOT)
    brokers = env.get("KAFKA_BROKERS") or os.environ.get("KAFKA_BROKERS")
    if not brokers:
        raise SystemExit("no running stack (var/stack.env is missing): start one with `make run`")
    cfg = get_settings()
    p = partition_for(USER, cfg.partitions)
    prod = Producer({"bootstrap.servers": brokers, "linger.ms": 5})

    settings = UserSettings(user_id=USER, email="sample@example.com", phone="+15551234567")
    prod.produce(name(SETTINGS, cfg.topic_prefix), encode_settings(settings), USER.encode(),
                 partition=p)
    device = Device(user_id=USER, token_id="iphone", platform="apns", token="a0" * 32)
    prod.produce(name(DEVICES, cfg.topic_prefix), encode_device(device), device_key(device),
                 partition=p)
    run = uuid.uuid4().hex[:8]
    ids = []
    for channel in CHANNELS:
        nid = f"sample-{run}-{channel}"
        req = NotificationRequest(
            id=nid, type="social.comment", recipients=[USER], created_at=int(time.time() * 1000),
            priority="high", channels=[channel], title="Hello from notiflow",
            body=f"Ann commented on your photo ({channel})")
        prod.produce(name(REQUESTS, cfg.topic_prefix), encode_request(req), USER.encode(),
                     partition=p)
        ids.append(nid)
    left = prod.flush(10)
    if left:
        raise SystemExit(f"{left} message(s) not delivered to Kafka at {brokers}")

    sandbox = env.get("SANDBOX_URL", cfg.apns_url)
    c = Console(soft_wrap=True)  # commands stay copy-pastable
    c.print(f"published settings and an APNs device for [bold]{USER}[/] (partition {p}), and "
            f"one request per channel: {', '.join(ids)}")
    c.print("look at:")
    c.print("  receipts          make stats")
    c.print(f"  provider view     curl -s '{sandbox}/_sandbox/messages'")
    # the URL carries the stack's Redis password: the command reads it, the screen never shows it
    c.print(f"  in-app inbox      .venv/bin/python -c \"import redis; from stack.env import "
            f"read_env_file; print(redis.Redis.from_url(read_env_file()['REDIS_URL'])"
            f".lrange('nf:inbox:{USER}', 0, -1))\"", markup=False)
    c.print(f"  raw SQL           .venv/bin/python -m loader.sql "
            f"\"SELECT channel, outcome, reason FROM notiflow.receipts "
            f"WHERE startsWith(notification_id, 'sample-{run}')\"", markup=False)


if __name__ == "__main__":
    main()
