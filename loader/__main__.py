"""``python -m loader --host H --port P``: ingest notify.receipts and serve named queries.

Reads KAFKA_BROKERS, CLICKHOUSE_URL or NOTIFLOW_CHDB_PATH (and NOTIFLOW_TOPIC_PREFIX) from
the environment, NOTIFLOW_LOADER_TOKEN (required: clients must send it) and, optionally,
NOTIFLOW_LOADER_SOCKET (a unix socket serving raw read-only SQL to the local user).
SIGTERM/SIGINT stop it cleanly: the pending batch is inserted and its offsets recorded
before exit.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading

from loader.api import MIN_TOKEN_CHARS, serve, serve_local
from loader.ingest import Ingestor, Progress
from loader.store import Store
from notiflow import topics
from notiflow.config import get_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loader", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--batch-rows", type=int, default=50_000, help="flush at this many rows")
    ap.add_argument(
        "--flush-s", type=float, default=0.2, help="flush when the oldest row is this old"
    )
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    log = logging.getLogger("loader")

    settings = get_settings()
    token = settings.loader_token.get_secret_value()
    if len(token) < MIN_TOKEN_CHARS:
        log.error("NOTIFLOW_LOADER_TOKEN is unset or under %d characters: refusing to start "
                  "(make run generates one per stack)", MIN_TOKEN_CHARS)
        return 2
    topic = topics.name(topics.RECEIPTS, settings.topic_prefix)
    store = Store(settings.clickhouse_url, settings.chdb_path,
                  receipts_ttl_days=settings.receipts_ttl_days,
                  rollup_ttl_days=settings.rollup_ttl_days)
    progress = Progress()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: flushing and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    servers = [serve(store, progress, args.host, args.port, token)]
    if settings.loader_socket:
        servers.append(serve_local(store, settings.loader_socket))
    where = settings.clickhouse_url or settings.chdb_path
    log.info("loading %s from %s into %s (%s)", topic, settings.kafka_brokers, where, store.backend)
    try:
        Ingestor(
            store,
            settings.kafka_brokers,
            topic,
            progress,
            batch_rows=args.batch_rows,
            flush_s=args.flush_s,
        ).run(stop)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        if settings.loader_socket:
            with contextlib.suppress(OSError):
                os.unlink(settings.loader_socket)
        store.close()
        snap = progress.snapshot()
        log.info(
            "stopped: rows_loaded=%d bad_rows=%d offsets=%s",
            snap["rows_loaded_by_this_run"],
            snap["bad_rows"],
            snap["offsets"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
