"""One small interface for the push hot path, two implementations.

DESIGN.md measured client CPU per request: httpx over HTTP/2 ~750 µs, libcurl (pycurl)
with HTTP/2 multiplexing ~15 µs.  ``CurlTransport`` sends a whole batch multiplexed on one
connection per host and returns every status; ``HttpxTransport`` is the simple reference
(``make bench`` shows both).  Neither is thread-safe: one per sink partition (both refuse
to be called from a second thread).
"""

from __future__ import annotations

import threading
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


class PushTransport(Protocol):
    def send(self, reqs: list[HttpReq]) -> list[HttpResp]:
        """Send every request (concurrently where the transport can); one answer each, in
        order.  Never raises for a request's own failure: that is ``HttpResp.error``."""
        ...

    def close(self) -> None: ...


_KEEP = ("apns-id", "retry-after")


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

    # Streams in flight per round: above a few hundred, libcurl spends more CPU juggling
    # pending streams than it saves (measured: 100 -> 35 µs, 1000 -> 43 µs a request).
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

    def send(self, reqs: list[HttpReq]) -> list[HttpResp]:
        self._check_thread()
        if self._closed:
            raise RuntimeError("CurlTransport is closed")
        out: list[HttpResp] = []
        for i in range(0, len(reqs), self._max_streams):
            out += self._send(reqs[i : i + self._max_streams])
        return out

    def _prepare(self, c, r: HttpReq, buf: BytesIO, hdrs: dict[str, str]) -> None:
        pc = self._pc
        c.setopt(pc.URL, r.url)
        c.setopt(pc.HTTP_VERSION, pc.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                 if r.url.startswith("http://") else pc.CURL_HTTP_VERSION_2TLS)
        # "Expect:" stops libcurl's 100-continue wait should a host fall back to HTTP/1.1
        c.setopt(pc.HTTPHEADER, [f"{k}: {v}" for k, v in r.headers] + ["Expect:"])
        c.setopt(pc.POSTFIELDS, r.body)
        if r.method != "POST":
            c.setopt(pc.CUSTOMREQUEST, r.method)
            self._custom.add(id(c))
        elif id(c) in self._custom:
            c.unsetopt(pc.CUSTOMREQUEST)
            self._custom.discard(id(c))
        c.setopt(pc.WRITEDATA, buf)
        c.setopt(pc.HEADERFUNCTION, _header_collector(hdrs))

    def _send(self, reqs: list[HttpReq]) -> list[HttpResp]:
        pc = self._pc
        m = self._multi
        handles: list[tuple] = []
        active: dict[int, int] = {}  # id(handle) -> index, while added to the multi handle
        errors: dict[int, str] = {}
        try:
            for r in reqs:
                c = self._handle()
                buf = BytesIO()
                hdrs: dict[str, str] = {}
                handles.append((c, buf, hdrs))  # owned by this batch from here on
                self._prepare(c, r, buf, hdrs)
                m.add_handle(c)
                active[id(c)] = len(handles) - 1
            while active:
                while m.perform()[0] == pc.E_CALL_MULTI_PERFORM:
                    pass
                while True:
                    queued, ok, bad = m.info_read()
                    for c in ok:
                        m.remove_handle(c)
                        del active[id(c)]
                    for c, _errno, msg in bad:
                        errors[active.pop(id(c))] = msg or f"curl error {_errno}"
                        m.remove_handle(c)
                    if not queued:
                        break
                if active:
                    m.select(0.05)
            out = []
            for k, (c, buf, hdrs) in enumerate(handles):
                if k in errors:
                    out.append(HttpResp(0, {}, b"", errors[k]))
                else:
                    out.append(HttpResp(c.getinfo(pc.RESPONSE_CODE), hdrs, buf.getvalue()))
            return out
        finally:
            # never leak a handle: out of the multi handle, back to the free list
            for c, _, _ in handles:
                if id(c) in active:
                    m.remove_handle(c)
                c.setopt(pc.WRITEDATA, _SINK)  # drop references to this batch's buffers
                c.setopt(pc.HEADERFUNCTION, _ignore)
                self._free.append(c)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for c in self._free:
            c.close()
        self._free.clear()
        self._multi.close()


_SINK = BytesIO()


def _ignore(_line: bytes) -> None:
    return None


def _header_collector(into: dict[str, str]):
    def collect(line: bytes) -> None:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            name = name.strip().lower()
            if name in _KEEP:
                into[name] = value.strip()
    return collect


class HttpxTransport(_OneThread):
    """httpx with HTTP/2 (prior knowledge over cleartext: ``http1=False``): simple and slow
    (~750 µs CPU a request, one request at a time); the reference for ``make bench``."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        import httpx

        self._httpx = httpx
        self._c = httpx.Client(http1=False, http2=True, timeout=timeout_s)

    def send(self, reqs: list[HttpReq]) -> list[HttpResp]:
        self._check_thread()
        out = []
        for r in reqs:
            try:
                resp = self._c.request(r.method, r.url, headers=r.headers, content=r.body)
                out.append(HttpResp(resp.status_code,
                                    {k: resp.headers[k] for k in _KEEP if k in resp.headers},
                                    resp.content))
            except self._httpx.HTTPError as e:
                out.append(HttpResp(0, {}, b"", f"{type(e).__name__}: {e}"))
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
                 check) -> list:
    """Build every request, fail the invalid ones before any network call (like gorush's
    CheckMessage: ``check(task, req)`` returns why, or None), send the rest as one
    multiplexed batch and classify each answer.  Results come back in the order of ``tasks``."""
    from sinks import results as R

    out: list = [None] * len(tasks)
    idx: list[int] = []
    reqs: list[HttpReq] = []
    for i, t in enumerate(tasks):
        req = build(t)
        problem = check(t, req)
        if problem is not None:
            out[i] = R.failed(t, problem)
            continue
        idx.append(i)
        reqs.append(req)
    if reqs:
        for i, resp in zip(idx, transport.send(reqs), strict=True):
            out[i] = classify(tasks[i], resp)
    return out
