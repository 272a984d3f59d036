"""How well the shared token buckets hold a rate (``make bench`` phase ``ratelimit``).

Two figures:

* contention: N processes draw from one Redis bucket of rate R for T seconds, each
  taking one token at a time as fast as the bucket allows.  Grants are timed on the
  bucket's own clock (Redis TIME, returned by the script), so the figures are the
  bucket's, not the clients' scheduling.  Achieved rate = tokens granted after the
  initial burst / time; error = (achieved - R) / R.
* push run: N processes each push tasks through the real push sink (DeliverySink ->
  libcurl -> the sandbox's APNs) with ``rate_apns_per_s = R``; the rate is read from the
  times the sandbox accepted the messages.

    python -m bench.rate_limit [--processes 4] [--rate 500] [--seconds 10]

Run alone it starts Redis (and for the push run the whole stack) itself.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import uuid
from dataclasses import dataclass

S = 1_000_000  # microseconds in a second


@dataclass(frozen=True, slots=True)
class RateFigures:
    processes: int
    rate: float
    burst: float
    seconds: float
    granted: float  # every token granted, initial burst included
    achieved: float  # per second, after the initial burst
    error_pct: float
    worst_excess: float  # max over windows of granted - (rate * window + burst); <= 0 holds


def _contend_worker(redis_url: str, key: str, rate: float, burst: float, start_at: float,
                    seconds: float) -> list[tuple[int, float]]:
    """Take one token at a time until the run ends: [(bucket time in us, tokens)]."""
    import redis

    from sinks.rate_limit import TokenBucket

    r = redis.Redis.from_url(redis_url)
    b = TokenBucket(r, key, rate, burst)
    grants: list[tuple[int, float]] = []
    time.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    while time.time() < end:
        got, wait = b.take(1, 1)
        if got:
            grants.append((b.last_now_us, got))
        else:
            time.sleep(min(wait, max(0.0, end - time.time())))
    r.close()
    return grants


def excess_over_windows(grants: list[tuple[int, float]], rate: float, burst: float) -> float:
    """Max over every window [t_i, t_j] of tokens granted in it - (rate*len + burst).

    Tokens granted in a window can never exceed what the bucket held at its start (at most
    the burst) plus what it gained during it: the bound a shared bucket promises."""
    grants = sorted(grants)
    worst = float("-inf")
    # O(n^2) over n grants would be slow for long runs: the bound only needs prefix sums,
    # max over j of (P_j - rate*t_j) - min over i<=j of (P_{i-1} - rate*t_i)
    prefix = 0.0
    best_start = float("inf")  # min over i of (P_{i-1} - rate * t_i)
    t0 = grants[0][0] if grants else 0
    for ts, n in grants:
        t = (ts - t0) / S  # relative: rate * t stays small enough for exact-ish floats
        best_start = min(best_start, prefix - rate * t)
        prefix += n
        worst = max(worst, (prefix - rate * t) - best_start - burst)
    return worst


def figures(grants: list[tuple[int, float]], processes: int, rate: float, burst: float,
            seconds: float) -> RateFigures:
    grants = sorted(grants)
    total = sum(n for _, n in grants)
    span = (grants[-1][0] - grants[0][0]) / S if len(grants) > 1 else 0.0
    # the first burst is free (a full bucket): the rate is what came after it
    achieved = (total - burst) / span if span > 0 else 0.0
    return RateFigures(processes, rate, burst, seconds, total, achieved,
                       (achieved - rate) / rate * 100, excess_over_windows(grants, rate, burst))


def _warm(_: int) -> int:
    """Import what a worker needs and linger, so every pool process is up before a run."""
    import os

    import redis  # noqa: F401

    import sinks.rate_limit  # noqa: F401

    time.sleep(0.3)
    return os.getpid()


def _pool(processes: int):
    pool = mp.get_context("spawn").Pool(processes)
    pool.map(_warm, range(processes), chunksize=1)
    return pool


def contend(redis_url: str, processes: int, rate: float, seconds: float,
            burst: float | None = None) -> tuple[RateFigures, list[tuple[int, float]]]:
    """N processes on one fresh bucket; (figures, every grant)."""
    burst = rate if burst is None else burst
    key = f"bench:{uuid.uuid4().hex[:8]}"
    with _pool(processes) as pool:
        start_at = time.time() + 0.5
        parts = pool.starmap(_contend_worker, [(redis_url, key, rate, burst, start_at, seconds)
                                               for _ in range(processes)])
    grants = sorted(g for p in parts for g in p)
    return figures(grants, processes, rate, burst, seconds), grants


def _push_worker(env: dict[str, str], run: str, worker: int, n: int, batch: int) -> int:
    """Push n tasks through the real push sink in batches; how many were sent."""
    import os

    os.environ.update(env)
    from notiflow.config import Settings
    from schemas.task import DeliveryTask
    from sinks.bytewax_sinks import DeliverySink

    cfg = Settings()
    part = DeliverySink("push", cfg).build("push-out", worker, 1)
    now = int(time.time() * 1000)
    tasks = [DeliveryTask(notification_id=f"{run}-{worker}-{i}", user_id=f"{run}-u{i}",
                          type="bench.rate", priority="normal", channel="push",
                          provider="apns", target_id="phone", address=f"{worker:08x}{i:056x}",
                          title="Bench", body="rate", template=None, data=None,
                          collapse_key=None, created_ms=now)
             for i in range(n)]
    try:
        for i in range(0, n, batch):
            part.write_batch([tasks[i:i + batch]])
    finally:
        part.close()
    return n


def push_run(stack_env: dict[str, str], sandbox_url: str, processes: int, rate: float,
             n: int, batch: int = 500) -> RateFigures:
    """The sandbox-observed rate of ``n`` pushes through the rate-limited push sink."""
    from sandbox.client import SandboxControl

    run = f"rl{uuid.uuid4().hex[:6]}"
    env = {**stack_env, "NOTIFLOW_RATE_APNS_PER_S": str(rate), "NOTIFLOW_RATE_BURST_S": "1",
           "NOTIFLOW_RATE_MAX_WAIT_S": "600"}
    each = n // processes
    with _pool(processes) as pool:
        pool.starmap(_push_worker, [(env, run, w, each, batch) for w in range(processes)])
    with SandboxControl(sandbox_url) as sb:
        seen = [m for m in sb.messages("apns") if str(m.get("nid", "")).startswith(run)]
    # the sandbox stamps acceptance in ms: one grant per message at that time
    grants = [(int(m["ts_ms"]) * 1000, 1.0) for m in seen]
    return figures(grants, processes, rate, rate, 0.0)


def report(title: str, f: RateFigures, strict: bool = True) -> str:
    """One line; ``strict``: grants timed by the bucket itself, so the bound is exact (the
    sandbox's times are send times: a part is sent a little after its grant)."""
    if strict:
        bound = ("holds" if f.worst_excess <= 1e-6
                 else f"EXCEEDED by {f.worst_excess:.1f} tokens")
    else:
        bound = f"worst window {max(f.worst_excess, 0):+.0f} tokens over it (send jitter)"
    return (f"{title}: {f.processes} processes, rate {f.rate:,.0f}/s, burst {f.burst:,.0f}: "
            f"{f.granted:,.0f} granted, achieved {f.achieved:,.1f}/s, error {f.error_pct:+.2f} %, "
            f"bound rate*window+burst {bound}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--rate", type=float, default=500.0, help="tokens/s of the shared bucket")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--push-rate", type=float, default=1000.0, help="APNs sends/s (0 skips)")
    ap.add_argument("--push-seconds", type=float, default=10.0)
    args = ap.parse_args()
    run(args.processes, args.rate, args.seconds, args.push_rate, args.push_seconds)


def run(processes: int, rate: float, seconds: float, push_rate: float,
        push_seconds: float) -> list[str]:
    """Both figures, each on a freshly started stack part; the report lines."""
    from stack.services import start_redis

    lines = []
    redis_srv = start_redis()
    try:
        f, _ = contend(redis_srv.url, processes, rate, seconds)
        lines.append(report("shared bucket", f))
        print(lines[-1], flush=True)
    finally:
        redis_srv.stop()
    if push_rate > 0:
        import tempfile
        from pathlib import Path

        from stack.env import start_stack

        stack = start_stack(with_flows=False, workdir=Path(tempfile.mkdtemp(prefix="nf-rl-")))
        try:
            n = int(push_rate * push_seconds)
            f = push_run(stack.env(), stack.sandbox_url, min(processes, 2), push_rate, n)
            lines.append(report("push sink -> sandbox", f, strict=False))
            print(lines[-1], flush=True)
        finally:
            stack.stop()
    return lines


if __name__ == "__main__":
    main()
