"""The loader's HTTP endpoints (stdlib HTTP server in its own threads).

It shares the process with ingestion because chDB lets one process own the data folder.
Reader queries use the store's readonly session, whose own lock serialises them, so at most
one query runs at a time and ingestion keeps the other core.

On TCP no SQL text is accepted: clients run the named, parameterized queries of
loader/queries.py, with the shared token (``NOTIFLOW_LOADER_TOKEN``) as a Bearer header.

    GET  /health                       {"ok": true, "rows_loaded": N, "lag": M, ...} (no token)
    GET  /queries                      the names and their parameters
    POST /query {"name", "params"}     {"columns": [...], "types": [...], "rows": [[...]]}
    GET  /flushed?min_rows=N&timeout=S wait until N rows are in the store (200, or 504)
    GET  /flushed?timeout=S            wait until everything on the topic is loaded

Raw SQL is served only on a unix socket (``NOTIFLOW_LOADER_SOCKET``, mode 0600, so only the
user running the loader reaches it): ``POST /sql`` with the SQL as the body, for analysts'
``python -m loader.sql`` and local tests. It still runs on the readonly session.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import os
import re
import socketserver
import stat
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from loader.ingest import Progress
from loader.queries import NAMED, BadParams
from loader.store import QueryError, Store

log = logging.getLogger("loader.api")

MAX_BODY_BYTES = 1 << 20
MAX_WAIT_S = 300.0
MIN_TOKEN_CHARS = 32
# What a number from the network may look like: ASCII digits only. int() and float() also take
# "²"-like digits of other scripts (or raise on them), "1_0", spaces, "nan" and "inf".
_UINT = re.compile(r"[0-9]{1,10}")
_DECIMAL = re.compile(r"[0-9]{1,10}(\.[0-9]{1,10})?([eE][-+]?[0-9]{1,3})?")


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


class _Base(BaseHTTPRequestHandler):
    server_version = "notiflow-loader"
    protocol_version = "HTTP/1.1"
    store: Store

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: dict) -> None:
        data = _dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes | None:
        """The request body, or None after answering 400/411/413 (the connection then
        closes: an unread body would be taken for the next request)."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            self._send(411, {"error": "Content-Length required"})
            return None
        raw = raw.strip()
        if not _UINT.fullmatch(raw):  # also refuses "-1", which read() would take as "all"
            self.close_connection = True
            self._send(400, {"error": f"bad Content-Length {raw[:40]!r}"})
            return None
        length = int(raw)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return None
        return self.rfile.read(length)

    def _run(self, sql: str, params: dict[str, Any] | None = None) -> None:
        t0 = time.perf_counter()
        try:
            res = self.store.query(sql, params)
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


class _Handler(_Base):
    """TCP: health, named queries and flush waits; everything but /health needs the token."""

    progress: Progress
    backend: str
    token: bytes

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token):
            return True
        self.close_connection = True
        self._send(401, {"error": "missing or wrong loader token (Authorization: Bearer ...)"})
        return False

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        url = urlsplit(self.path)
        qs = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/health":
            self._send(200, {"ok": True, "backend": self.backend, **self.progress.snapshot()})
        elif url.path == "/query":
            self._send(405, {"error": "POST /query with {\"name\": ..., \"params\": {...}}"})
        elif not self._authorized():
            return
        elif url.path == "/queries":
            self._send(200, {name: {"doc": q.doc, "params": {p: repr(k) for p, k in
                                                           q.params.items()}}
                             for name, q in NAMED.items()})
        elif url.path == "/flushed":
            self._flushed(qs)
        else:
            self._send(404, {"error": f"no such path {url.path}"})

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        url = urlsplit(self.path)
        if url.path != "/query":
            self._send(404, {"error": f"no such path {url.path}"})
            return
        if not self._authorized():
            return
        body = self._body()
        if body is None:
            return
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            req = None
        if not isinstance(req, dict) or not isinstance(req.get("name"), str):
            self._send(422, {"error": 'body must be JSON {"name": str, "params": {...}}',
                             "field": "name"})
            return
        named = NAMED.get(req["name"])
        if named is None:
            self._send(404, {"error": f"no named query {req['name'][:100]!r}",
                             "names": sorted(NAMED)})
            return
        try:
            params = named.bind(req.get("params"))
        except BadParams as exc:
            self._send(422, {"error": str(exc), "field": exc.field})
            return
        self._run(named.sql, params)

    def _flushed(self, qs: dict[str, str]) -> None:
        raw_timeout = qs.get("timeout", "30")
        timeout = float(raw_timeout) if _DECIMAL.fullmatch(raw_timeout) else math.nan
        if not math.isfinite(timeout):  # nan would make wait_for spin a core forever
            self._send(422, {"error": f"timeout must be seconds in [0, {MAX_WAIT_S:g}]",
                             "field": "timeout"})
            return
        timeout = min(timeout, MAX_WAIT_S)
        raw_rows = qs.get("min_rows")
        if raw_rows is not None and not _UINT.fullmatch(raw_rows):
            self._send(422, {"error": "min_rows must be a whole number", "field": "min_rows"})
            return
        min_rows = int(raw_rows) if raw_rows is not None else None
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


class _LocalHandler(_Base):
    """Unix socket: raw SQL for the local user (file mode is the authentication)."""

    def address_string(self) -> str:
        return "local"

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        if urlsplit(self.path).path != "/sql":
            self._send(404, {"error": f"no such path {self.path}"})
            return
        body = self._body()
        if body is not None:
            self._run(body.decode("utf-8", "replace"))


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(store: Store, progress: Progress, host: str, port: int,
          token: str) -> ThreadingHTTPServer:
    """Start the TCP endpoint in a daemon thread and return the server (call ``shutdown()``).
    Raises ValueError when ``token`` is shorter than MIN_TOKEN_CHARS."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"NOTIFLOW_LOADER_TOKEN must be at least {MIN_TOKEN_CHARS} characters "
                         "(make run generates one; e.g. python -c 'import secrets; "
                         "print(secrets.token_urlsafe(32))')")
    handler = type("Handler", (_Handler,), {
        "store": store, "progress": progress, "backend": store.backend, "token": token.encode()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="loader-http", daemon=True).start()
    log.info("named queries on http://%s:%d", host, server.server_address[1])
    return server


def serve_local(store: Store, path: str) -> _UnixServer:
    """Start the raw-SQL unix socket at ``path`` (mode 0600) in a daemon thread."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # a stale socket of an earlier run; bind fails on any other file
    old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
    try:
        server = _UnixServer(path, type("LocalHandler", (_LocalHandler,), {"store": store}))
    finally:
        os.umask(old)
    threading.Thread(target=server.serve_forever, name="loader-sql", daemon=True).start()
    log.info("raw SQL for the local user on unix socket %s", path)
    return server
