"""`make fanout-status ID=...`: how far a fan-out job has got, while it runs.

Expansion counters come from Redis (``nf:fanout:{id}``: expanded, routed now, deferred to
pull-on-read, partitions done, written by the flow per chunk); delivery outcomes (sent,
suppressed, failed, ...) from the receipts in ClickHouse, the loader's named query
``fanout_outcomes``.
Addresses come from the environment or a running ``make run`` (var/stack.env).

    python -m stack.fanout_status ID [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import redis

from loader.client import Loader, LoaderError
from notiflow.config import get_settings
from operators.fanout import summarize_progress
from sinks.pull_feed import FANOUT
from stack.env import read_env_file
from stack.services import shown_url


def fanout_status(r: redis.Redis, loader: Loader, nid: str) -> dict[str, object] | None:
    """The job's progress and outcomes, or None if no job has that id (or it expired)."""
    fields = {k.decode(): v.decode() for k, v in r.hgetall(FANOUT + nid).items()}
    if not fields:
        return None
    status = summarize_progress(fields)
    try:
        status["outcomes"] = {o: n for o, n in loader.run("fanout_outcomes", timeout=10,
                                                          id=nid).rows}
    except (LoaderError, ValueError) as e:
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
    try:
        status = fanout_status(redis.Redis.from_url(redis_url, socket_timeout=5),
                               Loader.from_env(), args.id)
    except redis.RedisError as e:
        sys.exit(f"fanout-status: Redis at {shown_url(redis_url)} unavailable: {e}")
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
