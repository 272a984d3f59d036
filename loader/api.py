"""The loader's small read-only SQL endpoint (stdlib HTTP server in its own threads).

It shares the process with ingestion because chDB lets one process own the data folder.
Reader queries use the store's readonly session, whose own lock serialises them, so at most
one analyst query runs at a time and ingestion keeps the other core.

    GET  /health                      {"ok": true, "rows_loaded": N, "lag": M, ...}
    POST /query   (body: SQL)         {"columns": [...], "types": [...], "rows": [[...]]}
    GET  /query?sql=SELECT+...        same
    GET  /flushed?min_rows=N&timeout=S   wait until N rows are in the store (200, or 504)
    GET  /flushed?timeout=S              wait until everything on the topic is loaded
"""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from loader.ingest import Progress
from loader.sqlguard import read_only_violation
from loader.store import QueryError, Store

log = logging.getLogger("loader.api")

MAX_SQL_BYTES = 1 << 20
MAX_WAIT_S = 300.0


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, set | frozenset):
        return list(obj)
    return str(obj)


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(
        obj, default=_default, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    )


class _Handler(BaseHTTPRequestHandler):
    server_version = "notiflow-loader"
    protocol_version = "HTTP/1.1"
    store: Store
    progress: Progress
    backend: str

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: dict) -> None:
        data = _dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        url = urlsplit(self.path)
        qs = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/health":
            self._send(200, {"ok": True, "backend": self.backend, **self.progress.snapshot()})
        elif url.path == "/query":
            self._query(qs.get("sql", ""))
        elif url.path == "/flushed":
            self._flushed(qs)
        else:
            self._send(404, {"error": f"no such path {url.path}"})

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        url = urlsplit(self.path)
        if url.path != "/query":
            self._send(404, {"error": f"no such path {url.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_SQL_BYTES:
            self._send(413, {"error": "query too large"})
            return
        self._query(self.rfile.read(length).decode("utf-8", "replace"))

    def _query(self, sql: str) -> None:
        reason = read_only_violation(sql)
        if reason:
            self._send(400, {"error": reason})
            return
        t0 = time.perf_counter()
        try:
            res = self.store.query(sql)
        except QueryError as exc:
            self._send(400, {"error": str(exc)})
            return
        self._send(
            200,
            {
                "columns": res.columns,
                "types": res.types,
                "rows": res.rows,
                "elapsed_ms": round((time.perf_counter() - t0) * 1000, 2),
            },
        )

    def _flushed(self, qs: dict[str, str]) -> None:
        try:
            timeout = min(float(qs.get("timeout", "30")), MAX_WAIT_S)
            min_rows = int(qs["min_rows"]) if "min_rows" in qs else None
        except ValueError:
            self._send(400, {"error": "min_rows must be an int and timeout a number"})
            return
        asked = time.monotonic()
        p = self.progress

        def done() -> bool:
            if min_rows is not None:
                return p.rows_total >= min_rows
            return p.lag == 0 and p.lag_checked_at > asked

        with p.cond:
            ok = p.cond.wait_for(done, timeout=timeout)
        snap = p.snapshot()
        self._send(200 if ok else 504, {"ok": ok, **snap})


def serve(store: Store, progress: Progress, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread and return the server (call ``shutdown()``)."""
    handler = type(
        "Handler", (_Handler,), {"store": store, "progress": progress, "backend": store.backend}
    )
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="loader-http", daemon=True).start()
    log.info("SQL endpoint on http://%s:%d", host, server.server_address[1])
    return server
