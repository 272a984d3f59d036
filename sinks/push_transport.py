"""One small interface for the push hot path, two implementations.

DESIGN.md measured client CPU per request: httpx over HTTP/2 ~750 µs, libcurl (pycurl)
with HTTP/2 multiplexing ~15 µs.  ``CurlTransport`` sends a whole batch multiplexed on one
connection per host and returns every status; ``HttpxTransport`` is the simple reference
(``make bench`` shows both).  Neither is thread-safe: one per sink partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO
from typing import Protocol

from notiflow.config import Settings


@dataclass(slots=True)
class HttpReq:
    url: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(slots=True)
class HttpResp:
    status: int  # 0 when there was no HTTP answer (see error)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None  # connection error / timeout


class PushTransport(Protocol):
    def send(self, reqs: list[HttpReq]) -> list[HttpResp]: ...
    def close(self) -> None: ...


_KEEP = ("apns-id", "retry-after")


class CurlTransport:
    """libcurl multi handle: HTTP/2 (h2c prior knowledge for http://, ALPN for https://)."""

    # Streams in flight per round: above a few hundred, libcurl spends more CPU juggling
    # pending streams than it saves (measured: 100 -> 35 µs, 1000 -> 43 µs a request).
    def __init__(self, timeout_s: float = 10.0, max_streams: int = 250) -> None:
        import pycurl

        self._pycurl = pycurl
        self._timeout_ms = int(timeout_s * 1000)
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self._multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
        # libcurl allows 100 streams a connection unless told more
        if hasattr(pycurl, "M_MAX_CONCURRENT_STREAMS"):
            self._multi.setopt(pycurl.M_MAX_CONCURRENT_STREAMS, max_streams)
        self._max_streams = max_streams
        self._free: list = []

    def _handle(self):
        pc = self._pycurl
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
        out: list[HttpResp] = []
        for i in range(0, len(reqs), self._max_streams):
            out += self._send(reqs[i : i + self._max_streams])
        return out

    def _send(self, reqs: list[HttpReq]) -> list[HttpResp]:
        pc = self._pycurl
        m = self._multi
        handles = []
        for r in reqs:
            c = self._handle()
            buf = BytesIO()
            hdrs: dict[str, str] = {}
            c.setopt(pc.URL, r.url)
            c.setopt(pc.HTTP_VERSION, pc.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                     if r.url.startswith("http://") else pc.CURL_HTTP_VERSION_2TLS)
            c.setopt(pc.HTTPHEADER, [f"{k}: {v}" for k, v in r.headers])
            c.setopt(pc.POSTFIELDS, r.body)
            c.setopt(pc.WRITEDATA, buf)
            c.setopt(pc.HEADERFUNCTION, _header_collector(hdrs))
            m.add_handle(c)
            handles.append((c, buf, hdrs))
        by_handle = {id(c): k for k, (c, _, _) in enumerate(handles)}
        errors: dict[int, str] = {}
        remaining = len(handles)
        while remaining:
            while m.perform()[0] == pc.E_CALL_MULTI_PERFORM:
                pass
            while True:
                _queued, ok, bad = m.info_read()
                for c in ok:
                    m.remove_handle(c)
                    remaining -= 1
                for c, _errno, msg in bad:
                    errors[by_handle[id(c)]] = msg
                    m.remove_handle(c)
                    remaining -= 1
                if not _queued:
                    break
            if remaining:
                m.select(0.05)
        out = []
        for k, (c, buf, hdrs) in enumerate(handles):
            if k in errors:
                out.append(HttpResp(0, {}, b"", errors[k]))
            else:
                out.append(HttpResp(c.getinfo(pc.RESPONSE_CODE), hdrs, buf.getvalue()))
            c.setopt(pc.WRITEDATA, BytesIO())  # drop references to this batch's buffers
            self._free.append(c)
        return out

    def close(self) -> None:
        for c in self._free:
            c.close()
        self._free.clear()
        self._multi.close()


def _header_collector(into: dict[str, str]):
    def collect(line: bytes) -> None:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            name = name.strip().lower()
            if name in _KEEP:
                into[name] = value.strip()
    return collect


class HttpxTransport:
    """httpx with HTTP/2: simple and slow (~750 µs CPU a request); for low volume and bench."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        import httpx

        self._httpx = httpx
        self._c = httpx.Client(http1=False, http2=True, timeout=timeout_s)

    def send(self, reqs: list[HttpReq]) -> list[HttpResp]:
        out = []
        for r in reqs:
            try:
                resp = self._c.post(r.url, headers=r.headers, content=r.body)
                out.append(HttpResp(resp.status_code,
                                    {k: resp.headers[k] for k in _KEEP if k in resp.headers},
                                    resp.content))
            except self._httpx.HTTPError as e:
                out.append(HttpResp(0, {}, b"", f"{type(e).__name__}: {e}"))
        return out

    def close(self) -> None:
        self._c.close()


def send_checked(transport: PushTransport, tasks: list, build, classify, max_payload: int,
                 provider: str) -> list:
    """Build every request, fail the oversized ones before any network call (like gorush's
    CheckMessage), send the rest as one multiplexed batch and classify each answer."""
    from sinks import results as R

    out = []
    ok = []
    reqs: list[HttpReq] = []
    for t in tasks:
        req = build(t)
        if len(req.body) > max_payload:
            out.append(R.failed(t, f"{provider} payload {len(req.body)} bytes > {max_payload}"))
            continue
        ok.append(t)
        reqs.append(req)
    if reqs:
        out += [classify(t, r) for t, r in zip(ok, transport.send(reqs), strict=True)]
    return out


def make_transport(cfg: Settings) -> PushTransport:
    if cfg.push_transport == "httpx":
        return HttpxTransport(cfg.push_timeout_s)
    return CurlTransport(cfg.push_timeout_s)
