"""The running local stack as one object: where each part is, and the env children need.

A part whose URL is already in the environment (KAFKA_BROKERS, REDIS_URL, CLICKHOUSE_URL)
is used as it is and not started.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from notiflow.config import Settings
from stack.services import Service, start_kafka, start_loader, start_redis, start_sandbox
from stack.topics import create_topics

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    brokers: str
    redis_url: str
    sandbox_url: str
    stats_url: str
    workdir: Path
    services: list[Service] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e.update({
            "KAFKA_BROKERS": self.brokers,
            "REDIS_URL": self.redis_url,
            "NOTIFLOW_APNS_URL": self.sandbox_url,
            "NOTIFLOW_FCM_URL": self.sandbox_url,
            "NOTIFLOW_SENDGRID_URL": self.sandbox_url,
            "NOTIFLOW_TWILIO_URL": self.sandbox_url,
            "NOTIFLOW_SES_URL": self.sandbox_url,
            "NOTIFLOW_MAILGUN_URL": self.sandbox_url,
            "NOTIFLOW_VONAGE_URL": self.sandbox_url,
            "NOTIFLOW_STATS_URL": self.stats_url,
            "NOTIFLOW_CHDB_PATH": str(self.workdir / "chdb"),
            "PYTHONPATH": str(ROOT) + os.pathsep + e.get("PYTHONPATH", ""),
        })
        return e

    def write_env_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in {
            "KAFKA_BROKERS": self.brokers, "REDIS_URL": self.redis_url,
            "SANDBOX_URL": self.sandbox_url, "STATS_URL": self.stats_url}.items()))

    def stop(self) -> None:
        for s in reversed(self.services):
            s.stop()
        self.services.clear()


def start_stack(root: Path = ROOT, *, workdir: Path | None = None, with_flows: bool = False,
                main_processes: int = 1) -> Stack:
    """Kafka, Redis, the sandbox and the loader (and optionally both lanes), topics created."""
    workdir = Path(workdir or root / "var")
    logs = workdir / "logs"
    settings = Settings()
    started: list[Service] = []
    try:
        brokers = os.environ.get("KAFKA_BROKERS")
        if not brokers:
            started.append(start_kafka(logs))
            brokers = started[-1].url
            # local Tansu keeps topics in memory only: snapshots of an earlier broker's
            # offsets and state would not match this one
            shutil.rmtree(workdir / "recovery", ignore_errors=True)
        create_topics(brokers, settings)
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            started.append(start_redis(logs))
            redis_url = started[-1].url
        stack = Stack(brokers, redis_url, "", "", workdir, started)
        started.append(start_sandbox(stack.env(), logs))
        stack.sandbox_url = started[-1].url
        started.append(start_loader(stack.env(), logs))
        stack.stats_url = started[-1].url
        if with_flows:
            from stack.services import start_flow

            started += start_flow("main", stack.env(), processes=main_processes,
                                  recovery_dir=workdir / "recovery" / "main", log_dir=logs)
            started += start_flow("critical", stack.env(),
                                  recovery_dir=workdir / "recovery" / "critical", log_dir=logs)
            started += start_flow("retry", stack.env(),
                                  recovery_dir=workdir / "recovery" / "retry", log_dir=logs)
        return stack
    except BaseException:
        for s in reversed(started):
            s.stop()
        raise
