"""Throughput probe (not a test): N APNs requests multiplexed over ONE h2c connection.

    python -m sandbox.probe --url http://127.0.0.1:P [-n 50000] [--window 500]

Uses libcurl (pycurl CurlMulti) with prior-knowledge HTTP/2, the way a lean push client
would, so the figure says whether the sandbox can keep up with a push benchmark.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import orjson
import pycurl


def run(url: str, n: int, window: int) -> tuple[float, Counter]:
    m = pycurl.CurlMulti()
    m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
    m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
    m.setopt(pycurl.M_MAX_CONCURRENT_STREAMS, max(window, 1))  # libcurl caps at 100 otherwise
    headers = ["authorization: bearer probe", "apns-topic: com.example.app",
               "apns-push-type: alert", "apns-priority: 10"]

    def easy() -> pycurl.Curl:
        c = pycurl.Curl()
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE)
        c.setopt(pycurl.PIPEWAIT, 1)
        c.setopt(pycurl.POST, 1)
        c.setopt(pycurl.HTTPHEADER, headers)
        c.setopt(pycurl.WRITEFUNCTION, len)  # discard bodies
        return c

    def start(c: pycurl.Curl, i: int) -> None:
        c.setopt(pycurl.URL, f"{url}/3/device/probe{i % 1000}")
        c.setopt(pycurl.POSTFIELDS, orjson.dumps({"aps": {"alert": {"title": "t", "body": "b"}},
                                                  "nid": f"p{i}"}))
        m.add_handle(c)

    codes: Counter = Counter()
    free = [easy() for _ in range(min(window, n))]
    sent = done = 0
    t0 = time.perf_counter()
    while done < n:
        while free and sent < n:
            start(free.pop(), sent)
            sent += 1
        m.perform()
        while True:
            queued, ok, failed = m.info_read()
            for c in ok:
                codes[c.getinfo(pycurl.RESPONSE_CODE)] += 1
                m.remove_handle(c)
                free.append(c)
            for c, errno, _errmsg in failed:
                codes[f"curl-error-{errno}"] += 1
                m.remove_handle(c)
                free.append(c)
            done += len(ok) + len(failed)
            if not queued:
                break
        if done < n:
            m.select(0.01)
    elapsed = time.perf_counter() - t0
    for c in free:
        c.close()
    m.close()
    return n / elapsed, codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("-n", type=int, default=50_000)
    ap.add_argument("--window", type=int, default=500, help="streams in flight")
    args = ap.parse_args()
    rate, codes = run(args.url.rstrip("/"), args.n, args.window)
    print(f"{args.n} APNs requests over one h2c connection: {rate:,.0f} req/s  {dict(codes)}")


if __name__ == "__main__":
    main()
