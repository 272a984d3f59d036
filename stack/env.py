"""The running local stack as one object: where each part is, and the env children need.

Why: every child (sandbox, loader, flows, bench, tests) must point at the same Kafka, Redis,
sandbox and receipts store, and tools started later (`make sample`, `make stats`) must find
them.  ``Stack.env()`` is that environment; ``<workdir>/stack.env`` (``var/stack.env`` for
`make run`) is the same as KEY=VALUE lines, present only while the stack runs.

A part whose address is already in the environment is used as it is and not started:
``KAFKA_BROKERS`` (no Tansu), ``REDIS_URL`` (no redis-server), ``CLICKHOUSE_URL`` (the
loader writes to that server instead of a chDB folder; it still runs, since it is what
moves notify.receipts into ClickHouse).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from gateway.user_tokens import SECRET_ENV
from notiflow.config import Settings
from stack.services import (
    Service,
    start_flow,
    start_gateway,
    start_kafka,
    start_loader,
    start_redis,
    start_sandbox,
)
from stack.topics import create_topics

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = "stack.env"
PROVIDER_URL_VARS = ("NOTIFLOW_APNS_URL", "NOTIFLOW_FCM_URL", "NOTIFLOW_SENDGRID_URL",
                     "NOTIFLOW_TWILIO_URL", "NOTIFLOW_SES_URL", "NOTIFLOW_MAILGUN_URL",
                     "NOTIFLOW_VONAGE_URL")


@dataclass
class Stack:
    brokers: str
    redis_url: str
    sandbox_url: str = ""
    stats_url: str = ""
    chdb_path: str = ""
    workdir: Path = ROOT / "var"
    services: list[Service] = field(default_factory=list)
    clickhouse_url: str = ""
    gateway_url: str = ""
    dev_api_key: str = ""  # made by start_stack(with_gateway=True): scopes "*" and admin
    loader_token: str = ""  # the loader's clients send it (loader/client.py)
    loader_socket: str = ""  # the loader's raw-SQL unix socket, for the local user
    user_token_secret: str = ""  # signs people's tokens: the gateway's, `make user-token`'s

    @property
    def env_file(self) -> Path:
        return Path(self.workdir) / ENV_FILE

    def vars(self) -> dict[str, str]:
        """Only the variables that locate this stack's parts."""
        v = {"KAFKA_BROKERS": self.brokers, "REDIS_URL": self.redis_url}
        if self.sandbox_url:
            v.update(dict.fromkeys(PROVIDER_URL_VARS, self.sandbox_url))
        if self.stats_url:
            v["NOTIFLOW_STATS_URL"] = self.stats_url
        if self.gateway_url:
            v["NOTIFLOW_GATEWAY_URL"] = self.gateway_url
        if self.clickhouse_url:
            v["CLICKHOUSE_URL"] = self.clickhouse_url
        if self.chdb_path:
            v["NOTIFLOW_CHDB_PATH"] = self.chdb_path
        if self.loader_token:
            v["NOTIFLOW_LOADER_TOKEN"] = self.loader_token
        if self.loader_socket:
            v["NOTIFLOW_LOADER_SOCKET"] = self.loader_socket
        if self.user_token_secret:
            v[SECRET_ENV] = self.user_token_secret
        return v

    def env(self) -> dict[str, str]:
        """The environment every child process needs: ours over the parent's."""
        e = dict(os.environ)
        e.update(self.vars())
        e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH", "")) if p)
        return e

    def write_env_file(self, path: Path | None = None) -> Path:
        """KEY=VALUE lines for tools started later; SANDBOX_URL/STATS_URL are short aliases."""
        path = Path(path or self.env_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = {**self.vars(), "SANDBOX_URL": self.sandbox_url, "STATS_URL": self.stats_url}
        if self.dev_api_key:  # local stack only: the key `make run` printed
            lines["GATEWAY_DEV_API_KEY"] = self.dev_api_key
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        tmp.replace(path)
        return path

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def stop(self) -> None:
        """Stop every part in reverse start order and remove the env file."""
        with contextlib.suppress(OSError):
            self.env_file.unlink(missing_ok=True)
        errors = []
        while self.services:
            s = self.services.pop()
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 (stop the rest anyway)
                errors.append(f"{s.name}: {e}")
        if errors:
            raise RuntimeError("while stopping: " + "; ".join(errors))


def read_env_file(root: Path = ROOT) -> dict[str, str]:
    """A running stack's variables from ``<root>/var/stack.env`` (empty if none runs)."""
    path = Path(root) / "var" / ENV_FILE
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip():
            out[k.strip()] = v.strip()
    return out


def new_secret() -> str:
    """A fresh secret for one stack (32 random bytes, URL-safe): every stack makes its own,
    so no secret that signs or authenticates anything is ever a known default."""
    return secrets.token_urlsafe(32)


def create_dev_api_key(redis_url: str) -> str:
    """An API key for local use (every type, plus admin and broadcast), made the way
    producers' are."""
    import asyncio

    import redis.asyncio as aioredis

    from gateway.api_keys import create_key

    async def make() -> str:
        r = aioredis.from_url(redis_url)
        try:
            cfg = Settings()
            return await create_key(r, "dev", ["*", "admin", "broadcast"], cfg.gateway_default_rate,
                                    cfg.gateway_default_burst)
        finally:
            await r.aclose()

    return asyncio.run(make())


def start_stack(root: Path = ROOT, *, workdir: Path | None = None, with_flows: bool = True,
                main_processes: int = 1, workers: int = 1, snapshot_s: float = 5,
                settings: Settings | None = None, with_gateway: bool = False) -> Stack:
    """Kafka, Redis, topics, the sandbox and the loader, (``with_gateway``) the HTTP
    gateway with a dev API key (spool in ``<workdir>/spool``), then (``with_flows``) the main,
    critical and retry lanes.  Logs go to ``<workdir>/logs``, chDB to ``<workdir>/chdb``,
    recovery to ``<workdir>/recovery/<lane>``; ``<workdir>/stack.env`` is written at the
    end.  On any failure everything started so far is stopped."""
    workdir = Path(workdir or Path(root) / "var")
    logs = workdir / "logs"
    settings = settings or Settings()
    stack = Stack(brokers=os.environ.get("KAFKA_BROKERS", ""),
                  redis_url=os.environ.get("REDIS_URL", ""),
                  clickhouse_url=os.environ.get("CLICKHOUSE_URL", ""),
                  workdir=workdir,
                  # an operator's own secret wins, so tokens they sign keep working
                  user_token_secret=os.environ.get(SECRET_ENV) or new_secret())
    try:
        if not stack.brokers:
            stack.services.append(start_kafka(logs))
            stack.brokers = stack.services[-1].url
            # local Tansu keeps topics in memory only: snapshots of an earlier broker's
            # offsets and state would not match this one
            shutil.rmtree(workdir / "recovery", ignore_errors=True)
        create_topics(stack.brokers, settings)
        if not stack.redis_url:
            stack.services.append(start_redis(logs))
            stack.redis_url = stack.services[-1].url
        if not stack.clickhouse_url:
            stack.chdb_path = str(workdir / "chdb")
        stack.services.append(start_sandbox(stack.env(), logs))
        stack.sandbox_url = stack.services[-1].url
        stack.loader_token = new_secret()
        stack.loader_socket = str(workdir / "loader.sock")
        stack.services.append(start_loader(stack.env(), logs))
        stack.stats_url = stack.services[-1].url
        if with_gateway:
            stack.dev_api_key = create_dev_api_key(stack.redis_url)
            genv = {**stack.env(), "NOTIFLOW_GATEWAY_SPOOL_DIR": str(workdir / "spool")}
            stack.services.append(start_gateway(genv, logs))
            stack.gateway_url = stack.services[-1].url
        if with_flows:
            for lane, procs in (("main", main_processes), ("critical", 1), ("retry", 1)):
                stack.services += start_flow(
                    lane, stack.env(), processes=procs, workers=workers,
                    recovery_dir=workdir / "recovery" / lane, snapshot_s=snapshot_s,
                    log_dir=logs)
        stack.write_env_file()
        return stack
    except BaseException:
        with contextlib.suppress(Exception):
            stack.stop()
        raise
