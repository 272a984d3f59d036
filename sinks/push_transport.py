"""One small interface for the push hot path, two implementations.

Measured client CPU per request (BENCHMARKS.md, push transports): httpx over HTTP/2
~700 µs, libcurl (pycurl) with HTTP/2 multiplexing ~15-30 µs.  ``CurlTransport`` sends a whole batch multiplexed on one
connection per host and returns every status; ``HttpxTransport`` is the simple reference
(``make bench`` shows both).  Neither is thread-safe: one per sink partition (both refuse
to be called from a second thread).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Protocol

from notiflow.config import Settings


@dataclass(slots=True)
class HttpReq:
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    method: str = "POST"


@dataclass(slots=True)
class HttpResp:
    status: int  # 0 when there was no HTTP answer (see error)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names: _KEEP only
    body: bytes = b""
    error: str | None = None  # connection error / timeout


OnAnswer = Callable[[int, HttpResp], None]


class PushTransport(Protocol):
    def send(self, reqs: list[HttpReq], on_answer: OnAnswer | None = None) -> list[HttpResp]:
        """Send every request (concurrently where the transport can); one answer each, in
        order, and ``on_answer(index, answer)`` as each arrives (the sink marks sends while
        others are still on the wire).  Never raises for a request's own failure: that is
        ``HttpResp.error``."""
        ...

    def close(self) -> None: ...


_KEEP = ("apns-id", "retry-after")
# what would end a header line (or the string libcurl copies it from) and start another
_LINE_BREAK = re.compile(r"[\r\n\x00]")


def unsafe_header(r: HttpReq) -> str | None:
    """Why ``r`` must not be sent: a CR, LF or NUL in its URL or a header name or value
    would split it into headers of the caller's choosing on a request signed with our
    provider credentials.  The contracts refuse such values; this is the last line."""
    if not _LINE_BREAK.search("".join([r.url, *(k + v for k, v in r.headers)])):
        return None  # the common case: one search
    for k, v in r.headers:
        if _LINE_BREAK.search(k + v):
            return f"header {k[:40]!r}: contains CR, LF or NUL; not sent"
    return "url: contains CR, LF or NUL; not sent"


class UnsafeRequest(ValueError):
    """A request ``unsafe_header`` refuses: answered with its reason, never sent."""


class _OneThread:
    """Fails loudly when a transport is shared between threads (sink partitions)."""

    _owner: int | None = None

    def _check_thread(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise RuntimeError(f"{type(self).__name__} is used from two threads: "
                               "make one per sink partition")


class CurlTransport(_OneThread):
    """libcurl multi handle: HTTP/2 (h2c prior knowledge for http://, ALPN for https://),
    every request of a batch multiplexed on one connection per host (PIPEWAIT)."""

    # Streams in flight: 250-500 gave the most req/s against the sandbox (a sliding window:
    # 100 -> ~25k/s, 250 -> ~34k/s, 1000 -> ~27k/s; client CPU ~25 µs a request throughout).
    def __init__(self, timeout_s: float = 10.0, max_streams: int = 250) -> None:
        import pycurl

        self._pc = pycurl
        self._timeout_ms = int(timeout_s * 1000)
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self._multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
        # libcurl allows 100 streams a connection unless told more
        if hasattr(pycurl, "M_MAX_CONCURRENT_STREAMS"):
            self._multi.setopt(pycurl.M_MAX_CONCURRENT_STREAMS, max_streams)
        self._max_streams = max_streams
        self._free: list = []  # easy handles kept between batches (connection state is in multi)
        self._custom: set[int] = set()  # ids of handles with CUSTOMREQUEST set
        self._closed = False

    def _handle(self):
        pc = self._pc
        if self._free:
            return self._free.pop()
        c = pc.Curl()
        c.setopt(pc.POST, 1)
        c.setopt(pc.PIPEWAIT, 1)
        c.setopt(pc.NOSIGNAL, 1)
        c.setopt(pc.TIMEOUT_MS, self._timeout_ms)
        c.setopt(pc.CONNECTTIMEOUT_MS, min(self._timeout_ms, 5000))
        return c

    def send(self, reqs: list[HttpReq], on_answer: OnAnswer | None = None) -> list[HttpResp]:
        """Every request through one multi handle: at most ``max_streams`` in flight, a new
        one started as soon as one finishes (a sliding window, not rounds)."""
        self._check_thread()
        if self._closed:
            raise RuntimeError("CurlTransport is closed")
        pc, m = self._pc, self._multi
        out: list = [None] * len(reqs)
        active: dict[int, tuple] = {}  # id(handle) -> (handle, index, body, header bytes)
        nxt = 0
        try:
            while active or nxt < len(reqs):
                while nxt < len(reqs) and len(active) < self._max_streams:
                    self._start(reqs[nxt], nxt, active, out)
                    nxt += 1
                while m.perform()[0] == pc.E_CALL_MULTI_PERFORM:
                    pass
                while True:
                    queued, ok, bad = m.info_read()
                    for c in ok:
                        self._finish(c, active, out, None, on_answer)
                    for c, errno, msg in bad:
                        self._finish(c, active, out, msg or f"curl error {errno}", on_answer)
                    if not queued:
                        break
                # wait for the sockets only when no free slot can take a new request
                if active and (len(active) >= self._max_streams or nxt >= len(reqs)):
                    t = m.timeout()
                    m.select(0.05 if t < 0 else min(0.05, t / 1000))
            return out
        finally:
            # never leak a handle: out of the multi handle, back to the free list
            for c, *_ in list(active.values()):
                m.remove_handle(c)
                self._release(c)

    def _start(self, r: HttpReq, k: int, active: dict[int, tuple], out: list) -> None:
        c = self._handle()
        buf, hbuf = BytesIO(), BytesIO()
        try:
            self._prepare(c, r, buf, hbuf)
            self._multi.add_handle(c)
        except UnsafeRequest as e:  # this request alone, never sent
            self._release(c)
            out[k] = HttpResp(0, {}, b"", str(e))
            return
        except BaseException:
            self._release(c)
            raise
        active[id(c)] = (c, k, buf, hbuf)

    def _finish(self, c, active: dict[int, tuple], out: list, error: str | None,
                on_answer: OnAnswer | None) -> None:
        _, k, buf, hbuf = active.pop(id(c))
        self._multi.remove_handle(c)
        if error is not None:
            out[k] = HttpResp(0, {}, b"", error)
        else:
            out[k] = HttpResp(c.getinfo(self._pc.RESPONSE_CODE), parse_headers(hbuf.getvalue()),
                              buf.getvalue())
        self._release(c)
        if on_answer is not None:
            on_answer(k, out[k])

    def _release(self, c) -> None:
        c.setopt(self._pc.WRITEDATA, _SINK)  # drop references to this batch's buffers
        c.setopt(self._pc.WRITEHEADER, _SINK)
        self._free.append(c)

    def _prepare(self, c, r: HttpReq, buf: BytesIO, hbuf: BytesIO) -> None:
        pc = self._pc
        lines = [f"{k}: {v}" for k, v in r.headers]
        if _LINE_BREAK.search("".join([r.url, *lines])):  # before any setopt of this request
            raise UnsafeRequest(unsafe_header(r) or "CR, LF or NUL in the request")
        c.setopt(pc.URL, r.url)
        c.setopt(pc.HTTP_VERSION, pc.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                 if r.url.startswith("http://") else pc.CURL_HTTP_VERSION_2TLS)
        # "Expect:" stops libcurl's 100-continue wait should a host fall back to HTTP/1.1
        c.setopt(pc.HTTPHEADER, [*lines, "Expect:"])
        c.setopt(pc.POSTFIELDS, r.body)
        if r.method != "POST":
            c.setopt(pc.CUSTOMREQUEST, r.method)
            self._custom.add(id(c))
        elif id(c) in self._custom:
            c.unsetopt(pc.CUSTOMREQUEST)
            self._custom.discard(id(c))
        c.setopt(pc.WRITEDATA, buf)
        # raw header bytes written by libcurl (BytesIO.write: no Python frame per line);
        # parsed once per response for the few names we keep
        c.setopt(pc.WRITEHEADER, hbuf)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for c in self._free:
            c.close()
        self._free.clear()
        self._multi.close()


_SINK = BytesIO()
_KEEP_B = tuple((k.encode() + b":", k) for k in _KEEP)


def parse_headers(raw: bytes) -> dict[str, str]:
    """The ``_KEEP`` headers of one response's raw header block (names case-insensitive)."""
    out: dict[str, str] = {}
    low = raw.lower()
    for key, name in _KEEP_B:
        i = low.find(key)
        if i >= 0 and (i == 0 or low[i - 1] == 10):  # at a line start
            j = raw.find(b"\r\n", i)
            out[name] = raw[i + len(key): j if j >= 0 else len(raw)].decode("latin-1").strip()
    return out


class HttpxTransport(_OneThread):
    """httpx with HTTP/2 (prior knowledge over cleartext: ``http1=False``): simple and slow
    (~750 µs CPU a request, one request at a time); the reference for ``make bench``."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        import httpx

        self._httpx = httpx
        self._c = httpx.Client(http1=False, http2=True, timeout=timeout_s)

    def send(self, reqs: list[HttpReq], on_answer: OnAnswer | None = None) -> list[HttpResp]:
        self._check_thread()
        out = []
        for r in reqs:
            if (why := unsafe_header(r)) is not None:
                out.append(HttpResp(0, {}, b"", why))
                continue
            try:
                resp = self._c.request(r.method, r.url, headers=r.headers, content=r.body)
                out.append(HttpResp(resp.status_code,
                                    {k: resp.headers[k] for k in _KEEP if k in resp.headers},
                                    resp.content))
            except self._httpx.HTTPError as e:
                out.append(HttpResp(0, {}, b"", f"{type(e).__name__}: {e}"))
            if on_answer is not None and out[-1].status:
                on_answer(len(out) - 1, out[-1])
        return out

    def close(self) -> None:
        self._c.close()


TRANSPORTS = {"curl": CurlTransport, "httpx": HttpxTransport}


def make_transport(cfg: Settings) -> PushTransport:
    """The transport ``cfg.push_transport`` names (curl | httpx): one per sink partition."""
    try:
        cls = TRANSPORTS[cfg.push_transport]
    except KeyError:
        raise ValueError(f"push_transport must be one of {sorted(TRANSPORTS)}, "
                         f"not {cfg.push_transport!r}") from None
    return cls(cfg.push_timeout_s)


def send_checked(transport: PushTransport, tasks: list, build, classify,
                 check, on_result: Callable | None = None) -> list:
    """Build every request, fail the invalid ones before any network call (like gorush's
    CheckMessage: ``check(task, req)`` returns why, or None; so does ``unsafe_header``), send
    the rest as one multiplexed batch and classify each answer, as it arrives
    (``on_result(result)``).  Results come back in the order of ``tasks``."""
    from sinks import results as R

    out: list = [None] * len(tasks)
    idx: list[int] = []
    reqs: list[HttpReq] = []
    for i, t in enumerate(tasks):
        try:
            req = build(t)
            problem = check(t, req) or unsafe_header(req)
        except Exception as e:  # this task's payload cannot be built: it fails alone
            out[i] = R.payload_failed(t, t.provider, e)
            continue
        if problem is not None:
            out[i] = R.failed(t, problem)
            continue
        idx.append(i)
        reqs.append(req)
    if reqs:
        if on_result is None:
            for i, resp in zip(idx, transport.send(reqs), strict=True):
                out[i] = classify(tasks[i], resp)
            return out

        def answered(k: int, resp: HttpResp) -> None:
            i = idx[k]
            out[i] = classify(tasks[i], resp)
            on_result(out[i])

        for k, resp in enumerate(transport.send(reqs, answered)):
            if out[idx[k]] is None:  # not reported as it arrived (never sent)
                out[idx[k]] = classify(tasks[idx[k]], resp)
    return out
