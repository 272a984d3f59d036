"""The running local stack as one object: where each part is, and the env children need.

Why: every child (sandbox, loader, flows, bench, tests) must point at the same Kafka, Redis,
sandbox and receipts store, and tools started later (`make sample`, `make stats`) must find
them.  ``Stack.env()`` is that environment; ``<workdir>/stack.env`` (``var/stack.env`` for
`make run`) is the same as KEY=VALUE lines, present only while the stack runs.

Secrets: each stack makes its own (``new_secret``): the people's token secret
(``NOTIFLOW_USER_TOKEN_SECRET``, unless the environment sets one), the loader's token, and
the password of the Redis it starts (in ``REDIS_URL``; an operator's REDIS_URL is used as given).
They are in ``stack.env``, which only its owner may read (mode 0600), with the dev API key
that a stack makes only in a Redis it started itself and revokes when it stops.

A part whose address is already in the environment is used as it is and not started:
``KAFKA_BROKERS`` (no Tansu), ``REDIS_URL`` (no redis-server), ``CLICKHOUSE_URL`` (the
loader writes to that server instead of a chDB folder; it still runs, since it is what
moves notify.receipts into ClickHouse).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis

from gateway.user_tokens import SECRET_ENV
from notiflow.config import Settings
from notiflow.local_stack import ENV_FILE, ROOT
from notiflow.local_stack import read_env_file as read_env_file  # tools import it from here
from stack.services import (
    Service,
    folder_holders,
    new_secret,
    start_flow,
    start_gateway,
    start_kafka,
    start_loader,
    start_redis,
    start_sandbox,
)
from stack.topics import create_topics

T = TypeVar("T")
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
    # scopes *, admin, broadcast; only in a Redis the stack started; stop() revokes it
    dev_api_key: str = ""
    loader_token: str = ""  # the loader's clients send it (loader/client.py)
    loader_socket: str = ""  # the loader's raw-SQL unix socket, for the local user
    user_token_secret: str = ""  # signs people's tokens: the gateway's, `make user-token`'s
    # start_flow's arguments per lane, as start_stack gave them: a restart repeats them
    lanes: dict[str, dict] = field(default_factory=dict)

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
        """KEY=VALUE lines for tools started later; SANDBOX_URL/STATS_URL are short aliases.
        Readable by the owner only (mode 0600 from its creation): it holds the stack's
        secrets and its dev key."""
        path = Path(path or self.env_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = {**self.vars(), "SANDBOX_URL": self.sandbox_url, "STATS_URL": self.stats_url}
        if self.dev_api_key:  # local stack only: the key `make run` printed
            lines["GATEWAY_DEV_API_KEY"] = self.dev_api_key
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)  # O_EXCL: never write into a file someone else made
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in lines.items()))
        tmp.replace(path)
        return path

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def lane(self, lane: str) -> list[Service]:
        """The running processes of one flow lane."""
        return [s for s in self.services if s.lane == lane]

    def start_lane(self, lane: str) -> list[Service]:
        """Start one lane's processes the way start_stack did (again, after stop_lane: it
        resumes from its recovery folder)."""
        started = start_flow(lane, self.env(), **self.lanes[lane])
        self.services += started
        return started

    def stop_lane(self, lane: str) -> None:
        """Stop every process of one lane: a Bytewax process cannot rejoin its cluster alone."""
        for s in reversed(self.lane(lane)):
            self.services.remove(s)
            s.stop()

    def stop(self) -> None:
        """Revoke the dev key, stop every part in reverse start order, remove the env file.
        Never prints: a runner whose output is gone must still get here and finish."""
        with contextlib.suppress(OSError):
            self.env_file.unlink(missing_ok=True)
        errors = []
        if self.dev_api_key:
            try:
                revoke_dev_api_key(self.redis_url, self.dev_api_key)
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                pass  # its Redis (the stack's own, never persisted) is gone, and the key too
            except Exception as e:  # noqa: BLE001 (stop the parts anyway)
                errors.append(f"revoking the dev API key: {e}")
            self.dev_api_key = ""
        while self.services:
            s = self.services.pop()
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 (stop the rest anyway)
                errors.append(f"{s.name}: {e}")
        if errors:
            raise RuntimeError("while stopping: " + "; ".join(errors))


def create_dev_api_key(redis_url: str) -> str:
    """An API key for local use (every type, plus admin and broadcast), made the way
    producers' are.  Only ever in a Redis the stack started itself (start_stack): one it
    did not start may be someone's real one, where nobody should find an all-powerful key."""
    from gateway.api_keys import create_key

    async def make(r: aioredis.Redis) -> str:
        cfg = Settings()
        return await create_key(r, "dev", ["*", "admin", "broadcast"], cfg.gateway_default_rate,
                                cfg.gateway_default_burst)

    return _with_redis(redis_url, make)


def revoke_dev_api_key(redis_url: str, key: str) -> bool:
    """Revoke the dev key when its stack stops: True if it was still there."""
    from gateway.api_keys import revoke_plaintext

    return _with_redis(redis_url, lambda r: revoke_plaintext(r, key))


def _with_redis(redis_url: str, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    async def run() -> T:
        r = aioredis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            return await call(r)
        finally:
            await r.aclose()

    return asyncio.run(run())


def start_stack(root: Path = ROOT, *, workdir: Path | None = None, with_flows: bool = True,
                main_processes: int = 1, workers: int = 1, snapshot_s: float = 5,
                settings: Settings | None = None, with_gateway: bool = False) -> Stack:
    """Kafka, Redis, topics, the sandbox and the loader, (``with_gateway``) the HTTP
    gateway (spool in ``<workdir>/spool``; a dev API key if the stack started its own Redis),
    then (``with_flows``) the main, critical and retry lanes.  Logs go to ``<workdir>/logs``,
    chDB to ``<workdir>/chdb``, recovery to ``<workdir>/recovery/<lane>``;
    ``<workdir>/stack.env`` is written at the end.  On any failure everything started so
    far is stopped.  A chDB folder another process holds is refused before anything starts,
    naming that process (chDB's own error does not)."""
    workdir = Path(workdir or Path(root) / "var")
    logs = workdir / "logs"
    settings = settings or Settings()
    if not os.environ.get("CLICKHOUSE_URL") and (held := folder_holders(workdir / "chdb")):
        raise RuntimeError(
            f"the chDB folder {workdir / 'chdb'} is in use by "
            + ", ".join(f"pid {pid} ({cmd})" for pid, cmd in held.items())
            + ": another stack or loader runs on it; stop that process (kill PID) or give "
            "this stack another --workdir")
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
        own_redis = not stack.redis_url
        if own_redis:
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
            if own_redis:
                stack.dev_api_key = create_dev_api_key(stack.redis_url)
            genv = {**stack.env(), "NOTIFLOW_GATEWAY_SPOOL_DIR": str(workdir / "spool")}
            stack.services.append(start_gateway(genv, logs))
            stack.gateway_url = stack.services[-1].url
        if with_flows:
            for lane, procs in (("main", main_processes), ("critical", 1), ("retry", 1)):
                stack.lanes[lane] = {"processes": procs, "workers": workers,
                                     "recovery_dir": workdir / "recovery" / lane,
                                     "snapshot_s": snapshot_s, "log_dir": logs}
                stack.start_lane(lane)
        stack.write_env_file()
        return stack
    except BaseException:
        with contextlib.suppress(Exception):
            stack.stop()
        raise
