"""The stack runner's own parts: a real Tansu broker and topics, a real redis-server, and
Service's process handling (start, readiness, stop, kill -9), each torn down by the test.

These start their own broker and Redis (not the session stack) so they test the starters
themselves and need nothing from the sandbox or the loader.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from notiflow.config import Settings
from notiflow.topics import ALL, name
from stack.env import Stack, read_env_file
from stack.services import (
    Service,
    free_port,
    port_open,
    redis_password,
    shown_url,
    start_kafka,
    start_redis,
)
from stack.topics import create_topics


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); it holds nothing
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.05)
    return all(_gone(p) for p in pids)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    svc = start_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield svc
    finally:
        svc.stop()


def test_start_kafka_create_topics_partitions_and_compaction(kafka):
    settings = Settings(partitions=3)
    names = create_topics(kafka.url, settings)
    assert names == sorted(name(short) for short, _, _ in ALL)

    admin = AdminClient({"bootstrap.servers": kafka.url})
    topics = admin.list_topics(timeout=10).topics
    for n in names:
        assert len(topics[n].partitions) == 3, n

    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names])
    configs = {res.name: fut.result(timeout=10) for res, fut in futures.items()}
    # Tansu lists only the configs a topic was created with (no broker defaults)
    policy = {n: c["cleanup.policy"].value if "cleanup.policy" in c else "delete"
              for n, c in configs.items()}
    for short, _by_user, compacted in ALL:
        assert policy[name(short)] == ("compact" if compacted else "delete"), short


def test_create_topics_is_idempotent(kafka):
    settings = Settings(partitions=3)
    first = create_topics(kafka.url, settings)
    assert create_topics(kafka.url, settings) == first


def test_create_topics_refuses_other_partition_count(kafka):
    create_topics(kafka.url, Settings(partitions=3))
    with pytest.raises(RuntimeError, match="partition count"):
        create_topics(kafka.url, Settings(partitions=5), timeout=1)


def test_start_redis_answers_ping_and_stop_frees_port(tmp_path):
    import redis

    svc = start_redis(tmp_path)
    port = int(svc.url.rsplit(":", 1)[1].split("/")[0])
    try:
        with redis.Redis.from_url(svc.url) as r:
            assert r.ping() is True
            r.set("k", "v")
            assert r.get("k") == b"v"
    finally:
        svc.stop()
    assert not svc.alive
    assert not port_open(port)


def test_service_stop_leaves_no_process_behind(tmp_path):
    # the leader ignores SIGTERM and has a child that does too: only SIGKILL ends them
    script = ("import signal, subprocess, sys, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "c = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
              "print('child', c.pid, flush=True)\n"
              "time.sleep(600)\n")
    svc = Service("stubborn", [sys.executable, "-c", script], log_dir=tmp_path)
    svc.start(line="child ", timeout=20)
    child = int(svc.output().split()[1])
    leader = svc.pid
    assert not _gone(child)
    svc.stop(grace=0.5)
    assert _wait_gone([leader, child])
    assert not svc.alive
    svc.stop()  # idempotent
    svc.kill9()


def test_service_kill9_ends_group_and_is_idempotent(tmp_path):
    port = free_port()
    code = ("import socket, time; s = socket.socket(); "
            f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(600)")
    svc = Service("listener", [sys.executable, "-c", code], log_dir=tmp_path)
    svc.start(port=port, timeout=20)
    assert svc.alive and port_open(port)
    svc.kill9()
    assert not svc.alive
    assert svc.returncode == -9
    svc.kill9()
    svc.stop()


def test_service_start_reports_early_exit_with_log_tail(tmp_path):
    svc = Service("crasher", [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"],
                  log_dir=tmp_path)
    with pytest.raises(RuntimeError, match="boom: bad config"):
        svc.start(lambda: False, timeout=20)
    assert svc.returncode == 3


def test_service_start_times_out_and_stops_it(tmp_path):
    svc = Service("never-ready", [sys.executable, "-c", "import time; time.sleep(600)"],
                  log_dir=tmp_path)
    with pytest.raises(TimeoutError):
        svc.start(lambda: False, timeout=0.5)
    assert not svc.alive


def test_stack_env_and_env_file_locate_every_part(tmp_path, monkeypatch):
    s = Stack(brokers="127.0.0.1:1", redis_url="redis://127.0.0.1:2/0",
              sandbox_url="http://127.0.0.1:3", stats_url="http://127.0.0.1:4",
              chdb_path=str(tmp_path / "chdb"), workdir=tmp_path)
    env = s.env()
    assert env["KAFKA_BROKERS"] == "127.0.0.1:1"
    for var in ("NOTIFLOW_APNS_URL", "NOTIFLOW_FCM_URL", "NOTIFLOW_SENDGRID_URL",
                "NOTIFLOW_TWILIO_URL"):
        assert env[var] == "http://127.0.0.1:3"
    assert env["NOTIFLOW_STATS_URL"] == "http://127.0.0.1:4"
    assert env["NOTIFLOW_CHDB_PATH"] == str(tmp_path / "chdb")
    assert "" not in env["PYTHONPATH"].split(os.pathsep)

    # a child's Settings read exactly these places
    for k, v in s.vars().items():
        monkeypatch.setenv(k, v)
    child = Settings()
    assert (child.kafka_brokers, child.redis_url) == (s.brokers, s.redis_url)
    assert child.apns_url == child.sendgrid_url == child.twilio_url == s.sandbox_url
    assert (child.stats_url, child.chdb_path) == (s.stats_url, s.chdb_path)

    s.write_env_file(tmp_path / "var" / "stack.env")
    got = read_env_file(tmp_path)
    assert got["KAFKA_BROKERS"] == "127.0.0.1:1"
    assert got["STATS_URL"] == "http://127.0.0.1:4"
    assert got["SANDBOX_URL"] == "http://127.0.0.1:3"

    s.write_env_file()
    assert s.env_file.exists()
    s.stop()
    assert not s.env_file.exists()


def test_start_redis_wants_its_password_and_keeps_it_off_the_command_line(tmp_path):
    """Without a password any local user could connect to the stack's Redis and, say, add
    an admin API key to nf:apikeys or read anyone's inbox."""
    import redis

    svc = start_redis(tmp_path)
    password = redis_password(svc.url)
    port = int(svc.url.rsplit(":", 1)[1].split("/")[0])
    try:
        assert password and len(password) >= 32
        for pw in (None, "", "wrong", password[:-1]):
            with redis.Redis(port=port, password=pw, socket_timeout=5) as r:
                with pytest.raises(redis.AuthenticationError):
                    r.hset("nf:apikeys", "attacker", "admin")
        with redis.Redis.from_url(svc.url) as r:
            assert r.hlen("nf:apikeys") == 0 and r.ping()
        # not in ps, not in a file left behind, not in what gets printed
        with open(f"/proc/{svc.pid}/cmdline", "rb") as f:
            assert password.encode() not in f.read()
        assert not [p for p in tmp_path.rglob("*") if p.is_file() and password in p.read_text()]
        assert password not in shown_url(svc.url) and password not in repr(svc)
        # a restart on the same port with the same password serves the same URL
        svc.stop()
        svc = start_redis(tmp_path, port=port, password=password)
        with redis.Redis.from_url(svc.url) as r:
            assert r.ping()
    finally:
        svc.stop()


def test_stack_fixture_runs_every_part(stack, kafka_producer):
    import httpx
    import redis

    assert stack.env_file.read_text().count("=") >= 4
    assert {s.name for s in stack.services} >= {"sandbox", "loader"}
    assert all(s.alive for s in stack.services)
    assert httpx.get(f"{stack.sandbox_url}/_sandbox/health", timeout=5).status_code == 200
    assert httpx.get(f"{stack.stats_url}/health", timeout=5).status_code == 200
    with redis.Redis.from_url(stack.redis_url) as r:
        assert r.ping()
    with redis.Redis(port=int(stack.redis_url.rsplit(":", 1)[1].split("/")[0])) as r:
        with pytest.raises(redis.AuthenticationError):  # the stack's Redis wants the password
            r.ping()
    topics = AdminClient({"bootstrap.servers": stack.brokers}).list_topics(timeout=10).topics
    assert {name(short) for short, _, _ in ALL} <= set(topics)
    delivered = []
    kafka_producer.produce(name("rejected"), b"stack-fixture-probe",
                           on_delivery=lambda err, msg: delivered.append(err))
    kafka_producer.flush(10)
    assert delivered == [None]


def test_dev_key_only_in_a_redis_the_stack_started_and_revoked_on_stop(tmp_path, monkeypatch):
    import redis

    from gateway.api_keys import KEYS_HASH, hash_key
    from stack.env import create_dev_api_key, start_stack

    # someone else's Kafka and Redis, as far as the stack knows
    ext, kafka = start_redis(tmp_path / "ext"), start_kafka(tmp_path / "ext")
    try:
        with redis.Redis.from_url(ext.url) as r:
            # a stack in it: a gateway, but no dev key (nobody's key in someone's Redis)
            monkeypatch.setenv("KAFKA_BROKERS", kafka.url)
            monkeypatch.setenv("REDIS_URL", ext.url)
            monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
            st = start_stack(workdir=tmp_path / "w", with_flows=False, with_gateway=True)
            try:
                assert st.gateway_url and st.dev_api_key == ""
                assert r.hlen(KEYS_HASH) == 0
                assert "GATEWAY_DEV_API_KEY" not in st.env_file.read_text()
            finally:
                st.stop()
            # a stack's dev key (as made in its own Redis) is revoked by its stop()
            key = create_dev_api_key(ext.url)
            assert r.hexists(KEYS_HASH, hash_key(key))
            Stack(brokers=kafka.url, redis_url=ext.url, dev_api_key=key,
                  workdir=tmp_path / "w").stop()
            assert not r.hexists(KEYS_HASH, hash_key(key))
    finally:
        ext.stop()
        kafka.stop()
