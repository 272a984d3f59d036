"""`make fanout-status ID=...`: how far a fan-out job has got, while it runs.

Expansion counters come from Redis (``nf:fanout:{id}``: expanded, routed now, deferred to
pull-on-read, partitions done, written by the flow per chunk); delivery outcomes (sent,
suppressed, failed, ...) from the receipts in ClickHouse through the loader's /query.
Addresses come from the environment or a running ``make run`` (var/stack.env).

    python -m stack.fanout_status ID [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import httpx
import redis

from notiflow.config import get_settings
from operators.fanout import outcomes_sql, summarize_progress
from sinks.pull_feed import FANOUT
from stack.env import read_env_file


def fanout_status(r: redis.Redis, stats_url: str, nid: str) -> dict[str, object] | None:
    """The job's progress and outcomes, or None if no job has that id (or it expired)."""
    fields = {k.decode(): v.decode() for k, v in r.hgetall(FANOUT + nid).items()}
    if not fields:
        return None
    status = summarize_progress(fields)
    try:
        resp = httpx.post(f"{stats_url}/query", content=outcomes_sql(nid), timeout=10)
        resp.raise_for_status()
        status["outcomes"] = {o: n for o, n in resp.json()["rows"]}
    except (httpx.HTTPError, KeyError, ValueError) as e:
        status["outcomes"] = None
        status["outcomes_error"] = f"receipts unavailable: {e}"
    return status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("id", help="the audience request's notification id")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    env, cfg = read_env_file(), get_settings()
    redis_url = os.environ.get("REDIS_URL") or env.get("REDIS_URL") or cfg.redis_url
    stats_url = os.environ.get("NOTIFLOW_STATS_URL") or env.get("STATS_URL") or cfg.stats_url
    try:
        status = fanout_status(redis.Redis.from_url(redis_url, socket_timeout=5), stats_url,
                               args.id)
    except redis.RedisError as e:
        sys.exit(f"fanout-status: Redis at {redis_url} unavailable: {e}")
    if status is None:
        sys.exit(f"fanout-status: no fan-out job {args.id!r} (not started, or expired)")
    if args.json:
        print(json.dumps(status, indent=2))
        return
    for k in ("audience", "type", "hybrid", "partitions", "partitions_done", "finished",
              "expanded", "routed_now", "deferred"):
        print(f"{k:16} {status.get(k)}")
    outcomes = status.get("outcomes")
    if outcomes is None:
        print(f"{'outcomes':16} {status.get('outcomes_error')}")
    else:
        for o, n in sorted(outcomes.items()):  # type: ignore[union-attr]
            print(f"{'  ' + o:16} {n}")


if __name__ == "__main__":
    main()
