"""The lanes' Redis writes ride out a Redis restart instead of killing the lane.

The routed sink's fan-out / settings-copy writes (sinks/pull_feed.FanoutRedis) used to give
up after 5 attempts (~3 s of backoff) and raise, which kills the whole flow process: a
Redis stopped for a few seconds under CPU load stopped the main lane, and every in-app
notification behind it waited for somebody to restart the flow (the fault suite's
"Redis stopped 3 s mid-run" lost 450 of 600).  Real redis-server, stopped and started on
the same port (empty, as in the fault test).
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis

from sinks.pull_feed import SETTINGS_COPY, FanoutRedis
from stack.services import redis_password, start_redis


class _Failures(logging.Handler):
    """Counts the writer's logged failed attempts (the writer runs in another thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "fan-out writes to Redis failed" in record.getMessage():
            self.n += 1


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_fanout_write_waits_for_redis_to_come_back(tmp_path):
    redis_svc = start_redis(log_dir=tmp_path)
    port = int(redis_svc.url.rsplit(":", 1)[1].split("/")[0])
    fr_url = redis_svc.url
    fr = FanoutRedis(fr_url, pull_max=10, pull_ttl_s=60, status_ttl_s=60)  # default wait
    failures = _Failures()
    logging.getLogger("sinks.pull_feed").addHandler(failures)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            fr.write([], [], [], [], [("outage-user", b'{"v":1}')])
        except BaseException as e:  # noqa: BLE001 - the test reports what the writer raised
            errors.append(e)

    redis_svc.stop()
    t = threading.Thread(target=write, daemon=True)
    try:
        t.start()
        # more failed attempts than the old writer made before it raised (5)
        assert _wait(lambda: failures.n >= 6 or not t.is_alive(), 30)
        assert not errors, f"gave up while Redis was down: {errors[0]!r}"
        # back, and empty, with the password the writer's URL holds
        redis_svc = start_redis(log_dir=tmp_path, port=port, password=redis_password(fr_url))
        t.join(30)
        assert not t.is_alive() and not errors
        r = redis.Redis.from_url(redis_svc.url)
        assert r.get(SETTINGS_COPY + "outage-user") == b'{"v":1}'
        r.close()
    finally:
        logging.getLogger("sinks.pull_feed").removeHandler(failures)
        fr.close()
        redis_svc.stop()


def test_fanout_write_raises_after_its_wait(tmp_path):
    svc = start_redis(log_dir=tmp_path)
    url = svc.url
    svc.stop()  # and never back: the lane dies, so a restart replays the writes
    fr = FanoutRedis(url, pull_max=10, pull_ttl_s=60, status_ttl_s=60, wait_s=1)
    t0 = time.monotonic()
    with pytest.raises(redis.RedisError):
        fr.write([], [], [], [], [("outage-user", b"{}")])
    assert time.monotonic() - t0 < 10
    fr.close()
