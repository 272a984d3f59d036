"""Per-request cost of the routing step alone (no engine, no I/O), and its state size.

    python -m bench.route_micro [--users 100000] [--requests 200000]
"""

from __future__ import annotations

import argparse
import time

import orjson

from bench.workload import device_record, settings_record, user_id
from operators.partition import DEVICES, REQUEST, SETTINGS, PartitionProcessor


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200_000)
    args = ap.parse_args()
    base = rss_mib()
    p = PartitionProcessor(0, 1)
    t = time.perf_counter()
    for i in range(0, args.users, 10_000):
        ids = range(i, min(i + 10_000, args.users))
        p.process([(SETTINGS, None, settings_record(j), 0) for j in ids]
                  + [(DEVICES, None, device_record(j), 0) for j in ids], 1)
    load = time.perf_counter() - t
    print(f"settings+devices: {load / (2 * args.users) * 1e6:.2f} µs a record, "
          f"state {rss_mib() - base:.0f} MiB for {args.users:,} users")
    reqs = [(REQUEST, None, orjson.dumps({
        "id": f"n{i}", "type": "social.like", "created_at": 1, "recipients": [user_id(i % args.users)],
        "body": "hi", "channels": ["inapp"]}), 0) for i in range(args.requests)]
    t = time.perf_counter()
    for i in range(0, len(reqs), 2000):
        p.process(reqs[i : i + 2000], 2)
    print(f"requests: {(time.perf_counter() - t) / len(reqs) * 1e6:.2f} µs a request")
    t = time.perf_counter()
    snap = p.snapshot()
    print(f"snapshot: {time.perf_counter() - t:.3f} s, {len(snap['users']) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
