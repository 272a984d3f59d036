"""`make sample`: publish a sample user, device and one notification per channel.

Reads where the stack is from var/stack.env (written by `make run`).
"""

from __future__ import annotations

import time
import uuid

import orjson
from confluent_kafka import Producer
from rich.console import Console

from notiflow.config import get_settings
from notiflow.topics import partition_for
from stack.env import ROOT


def read_env() -> dict[str, str]:
    path = ROOT / "var" / "stack.env"
    if not path.exists():
        raise SystemExit("no running stack (var/stack.env is missing): start it with `make run`")
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def main() -> None:
    env = read_env()
    parts = get_settings().partitions
    prod = Producer({"bootstrap.servers": env["KAFKA_BROKERS"]})
    user = "sample-user"
    p = partition_for(user, parts)
    prod.produce("notify.settings", orjson.dumps({
        "v": 1, "user_id": user, "email": "sample@example.com", "phone": "+15551234567",
        "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Europe/Paris"}}),
        user.encode(), partition=p)
    prod.produce("notify.devices", orjson.dumps({
        "v": 1, "user_id": user, "token_id": "iphone", "platform": "apns",
        "token": "a0" * 32, "active": True}), f"{user}:iphone".encode(), partition=p)
    nid = f"sample-{uuid.uuid4().hex[:8]}"
    prod.produce("notify.requests", orjson.dumps({
        "v": 1, "id": nid, "type": "social.comment", "priority": "high", "recipients": [user],
        "channels": ["push", "email", "sms", "inapp"], "title": "Hello from notiflow",
        "body": "Ann commented on your photo", "created_at": int(time.time() * 1000)}),
        user.encode(), partition=p)
    prod.flush(10)
    c = Console()
    c.print(f"published notification [bold]{nid}[/] for {user} on push, email, sms and in-app")
    c.print(f"  receipts:      make stats   (or POST SQL to {env['STATS_URL']}/query)")
    c.print(f"  provider view: curl '{env['SANDBOX_URL']}/_sandbox/messages?provider=apns'")
    c.print(f"  inbox:         redis-cli -u {env['REDIS_URL']} LRANGE nf:inbox:{user} 0 -1")


if __name__ == "__main__":
    main()
