"""Throughput against worker count: the in-app phase on 1 process, 2 processes, 1 x 2 workers.

Why these three: Bytewax scales out two ways.  ``-w N`` adds worker *threads* to one
process (they share the GIL: per-item Python work does not get faster), ``-i/-a`` adds
processes (one GIL each).  On this 2-core machine the broker, Redis, the sandbox and the
loader share the same cores as the flows, so the table shows where the ceiling is rather
than a scaling curve; docs/capacity.md turns the per-core figure into a cluster size.

Each configuration gets fresh main-lane flows (fresh recovery, so the settings join is
rebuilt from the topics) on one shared stack with the users loaded once, then a warm-up,
then ``requests`` in-app requests timed first publish -> last receipt in ClickHouse.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from bench.plot import Panel, fetch
from bench.workload import load_users, make_producer

ROOT = Path(__file__).resolve().parent.parent
console = Console()


def parse_configs(spec: str) -> list[tuple[int, int]]:
    """"1x1,2x1,1x2" -> [(processes, workers), ...]."""
    out = []
    for part in spec.split(","):
        procs, sep, workers = part.strip().partition("x")
        if not sep or not procs.isdigit() or not workers.isdigit() or "0" in (procs, workers):
            raise SystemExit(f"--scaling: {part!r} is not PROCESSESxWORKERS, e.g. 2x1")
        out.append((int(procs), int(workers)))
    return out


def run(args, run_phase: Callable[..., dict], panels: list[Panel]) -> list[dict]:
    """Every configuration of ``args.scaling``; ``run_phase`` is bench.__main__'s phase."""
    from stack.env import start_stack
    from stack.services import start_flow

    configs = parse_configs(args.scaling)
    too_many = [c for c in configs if c[0] * c[1] > args.partitions]
    if too_many:
        raise SystemExit(f"--scaling {too_many}: more workers than --partitions {args.partitions}")
    work = Path(tempfile.mkdtemp(prefix="notiflow-scaling-"))
    stack = start_stack(ROOT, with_flows=False, workdir=work)
    results = []
    try:
        env = stack.env()
        prod = make_producer(stack.brokers)
        with tqdm(total=args.users, desc="scaling: load users", unit="user", leave=False) as bar:
            load_users(prod, "notify.", args.users, args.partitions, bar.update)
        for procs, workers in configs:
            tag = f"s{procs}x{workers}"
            flows = start_flow("main", env, processes=procs, workers=workers,
                               recovery_dir=work / f"rec-{tag}", snapshot_s=10,
                               log_dir=work / "logs")
            try:
                run_phase(stack, prod, f"{tag}w", 2000, args.users, "inapp", 0.0, args.partitions)
                r = run_phase(stack, prod, tag, args.scaling_requests, args.users, "inapp", 0.0,
                              args.partitions)
            finally:
                for f in reversed(flows):
                    with contextlib.suppress(Exception):  # the stack must stop regardless
                        f.stop()
            results.append({**r, "processes": procs, "workers": workers})
            time.sleep(1)  # let the loader settle between configurations
        panels.append(fetch(stack.loader_socket, "in-app, one configuration after another: "
                            + ", ".join(f"{p} proc x {w} worker" for p, w in configs),
                            "match(notification_id, '^s[0-9]+x[0-9]+-')"))
    finally:
        stack.stop()
    report(results, args)
    return results


def report(results: list[dict], args) -> None:
    t = Table(title=f"in-app throughput against worker count ({args.scaling_requests:,} requests "
                    f"a configuration, {args.partitions} partitions, 2-core machine shared with "
                    f"Kafka, Redis, sandbox, loader)")
    for c in ("processes x workers", "requests/s", "vs 1x1", "p99 ms"):
        t.add_column(c)
    base = next((r["rate"] for r in results if (r["processes"], r["workers"]) == (1, 1)), None)
    for r in results:
        p99 = max((row[3] for row in r["latency"]), default=float("nan"))
        rel = f"{r['rate'] / base:.2f}x" if base else "-"
        t.add_row(f"{r['processes']} x {r['workers']}", f"{r['rate']:,.0f}", rel, f"{p99:,.0f}")
    console.print(t)
