"""Push transports against the provider sandbox: client CPU per request and requests/s.

    python -m sinks.push_bench [--url http://127.0.0.1:PORT] [-n 20000] [--batch 2000]

Without --url it starts its own sandbox on a free port (and stops it).  The figures are the
whole sink path per request: ``apns.build_request`` + transport + ``apns.classify``
(build and classify are ~3 µs of it); the sandbox runs in its own process.
"""

from __future__ import annotations

import argparse
import resource
import time

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import apns
from sinks.push_transport import CurlTransport, HttpxTransport


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(name: str, transport, cfg: Settings, n: int, batch: int) -> tuple[float, float, int]:
    tasks = [DeliveryTask(f"pb-{name}-{i}", f"u{i}", "bench.push", "normal", "push", "apns",
                          "phone", f"{i:064x}", "Bench", f"push {i}", None, None, None,
                          int(time.time() * 1000)) for i in range(n)]
    ok = 0
    t0, c0 = time.perf_counter(), _cpu()
    for i in range(0, n, batch):
        ok += sum(r.status == "sent" for r in apns.send(transport, tasks[i : i + batch], cfg))
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return n / wall, cpu / n * 1e6, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url")
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--httpx-n", type=int, default=3000, help="httpx is slow: fewer requests")
    args = ap.parse_args()
    svc = None
    url = args.url
    if not url:
        from stack.services import start_sandbox

        svc = start_sandbox(None)
        url = svc.url
    try:
        cfg = Settings(apns_url=url)
        print(f"push transports -> sandbox {url} (APNs, one HTTP/2 connection)")
        for name, make, n in (("curl", CurlTransport, args.n), ("httpx", HttpxTransport, args.httpx_n)):
            t = make()
            run(name + "-warm", t, cfg, 200, 200)
            rate, cpu_us, ok = run(name, t, cfg, n, args.batch)
            t.close()
            print(f"  {name:6s} {n:>7,} requests: {rate:>9,.0f} req/s, client CPU {cpu_us:6.1f} µs/request, {ok} accepted")
    finally:
        if svc:
            svc.stop()


if __name__ == "__main__":
    main()
