"""The fault suite's shared pieces: flows with fast retries, a ledger, and the summary."""

from __future__ import annotations

import time
from dataclasses import dataclass
from hashlib import blake2b

import orjson
import pytest
from confluent_kafka import Producer

from loader.client import local_sql
from notiflow.topics import partition_for
from sandbox.client import SandboxControl

P = 4
SUMMARY: list[dict] = []


@dataclass
class Flows:
    env: dict
    tmp: object
    services: list

    def start(self, lanes=("main", "critical", "retry")) -> None:
        from stack.services import start_flow

        for lane in lanes:
            self.services += start_flow(lane, self.env, recovery_dir=self.tmp / f"rec-{lane}",
                                        snapshot_s=1, log_dir=self.tmp)

    def lane(self, lane: str) -> list:
        return [s for s in self.services if s.name.startswith(f"flow-{lane}-")]

    def kill9(self, lane: str) -> None:
        for s in self.lane(lane):
            s.kill9()
        self.services = [s for s in self.services if s.alive]

    def dead(self) -> list[str]:
        """Flow processes that died on their own (a lane nobody restarts here)."""
        return [s.name for s in self.services if not s.alive]

    def log_count(self, lane: str, text: str) -> int:
        """Lines of the lane's logs containing ``text``."""
        return sum(s.log_path.read_text(errors="replace").count(text) for s in self.lane(lane)
                   if s.log_path.exists())

    def stop(self, lane: str | None = None) -> None:
        for s in list(self.services):
            if lane is None or s.name.startswith(f"flow-{lane}-"):
                s.stop()
        self.services = [s for s in self.services if s.alive]


@pytest.fixture(scope="module")
def flows(stack, tmp_path_factory):
    env = {**stack.env(), "NOTIFLOW_RETRY_BASE_S": "0.3", "NOTIFLOW_RETRY_CAP_S": "2",
           "NOTIFLOW_RETRY_DEADLINE_S": "300"}
    f = Flows(env, tmp_path_factory.mktemp("faults"), [])
    f.start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def producer(stack):
    p = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 2})
    yield p
    p.flush(10)


@pytest.fixture
def sandbox(stack):
    c = SandboxControl(stack.sandbox_url)
    yield c
    c.clear_faults()


def put_device_user(producer, user: str, platform: str = "apns", **settings) -> None:
    p = partition_for(user, P)
    producer.produce("notify.settings", orjson.dumps({"v": 1, "user_id": user, **settings}),
                     user.encode(), partition=p)
    token = "f0" + blake2b(user.encode(), digest_size=31).hexdigest()
    producer.produce("notify.devices", orjson.dumps({
        "v": 1, "user_id": user, "token_id": "phone", "platform": platform, "token": token,
        "active": True}), f"{user}:phone".encode(), partition=p)


def publish(producer, user: str, nid: str, channels: list[str], **fields) -> None:
    producer.produce("notify.requests", orjson.dumps({
        "v": 1, "id": nid, "type": "fault.test", "recipients": [user], "channels": channels,
        "title": "Fault", "body": nid, "created_at": int(time.time() * 1000), **fields}),
        user.encode(), partition=partition_for(user, P))


def sent_counts(stack, prefix: str) -> dict[str, int]:
    """notification id -> number of 'sent' receipts, for ids starting with ``prefix``."""
    rows = local_sql(stack.loader_socket, (
        "SELECT notification_id, count() FROM notiflow.receipts WHERE outcome = 'sent' "
        f"AND startsWith(notification_id, '{prefix}') GROUP BY notification_id"), timeout=30).rows
    return {n: c for n, c in rows}


def accepted_counts(sandbox: SandboxControl, provider: str, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in sandbox.messages(provider):
        if (m["nid"] or "").startswith(prefix):  # other tests share the sandbox: nid may be None
            out[m["nid"]] = out.get(m["nid"], 0) + 1
    return out


def wait_for(pred, timeout: float, every: float = 0.5) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(every)
    return pred()


def record(fault: str, injected: int, ids: list[str], delivered: dict[str, int]) -> dict:
    row = {"fault": fault, "injected": injected, "accepted": len(ids),
           "delivered": sum(1 for n in ids if delivered.get(n, 0) >= 1),
           "lost": sum(1 for n in ids if delivered.get(n, 0) == 0),
           "duplicated": sum(1 for n in ids if delivered.get(n, 0) > 1)}
    SUMMARY.append(row)
    return row
