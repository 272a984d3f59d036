"""`make bench`: end-to-end throughput, latency per priority, push transports, peak memory.

Starts the whole local stack (Tansu, Redis, provider sandbox, loader/chDB, both lanes),
loads users, publishes requests with created_at stamped at publish time, and reads the
figures back from ClickHouse: throughput = receipts / (last receipt - first publish),
latency = event_ms - created_ms of 'sent' receipts.  Prints figures; asserts nothing.

    python -m bench [--requests 200000] [--users 100000] [--processes 2] [--memory-users 1000000]
    python -m bench --phases scaling,fanout --fanout-followers 100000   # only the new phases

Phases (``--phases``, default all): e2e (in-app, push, mixed, critical), transports,
ratelimit (bench/rate_limit.py), memory, scaling (bench/scaling.py), fanout
(bench/fanout.py), gateway (bench/gateway.py: single POSTs under wrk, skipped without
wrk); the delivered receipts per second of the phases that ran go to docs/bench-deliveries.png.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from bench import fanout, scaling
from bench.plot import DEFAULT_OUT as DEFAULT_PLOT
from bench.plot import Panel
from bench.plot import fetch as plot_fetch
from bench.plot import save as save_plot
from bench.workload import CHANNEL_MIXES, load_users, make_producer, produce, requests, user_id
from loader.client import local_sql
from notiflow.topics import partition_for

ROOT = Path(__file__).resolve().parent.parent
console = Console()
PHASES = ("e2e", "transports", "ratelimit", "memory", "scaling", "fanout", "gateway")


def q(socket: str, sql: str) -> list[list]:
    """Rows of ``sql`` through the loader's local raw-SQL socket."""
    return local_sql(socket, sql, timeout=60).rows


def wait_rows(socket: str, run: str, want: int, label: str, timeout: float = 600) -> None:
    sql = f"SELECT count() FROM notiflow.receipts WHERE notification_id LIKE '{run}-%'"
    with tqdm(total=want, desc=f"{label}: receipts", unit="rows", leave=False) as bar:
        deadline = time.time() + timeout
        got = 0
        while time.time() < deadline:
            got = q(socket, sql)[0][0]
            bar.update(got - bar.n)
            if got >= want:
                return
            time.sleep(0.25)
    raise SystemExit(f"{label}: only {got}/{want} receipts after {timeout}s")


def run_phase(stack, prod, run: str, n: int, users: int, mix: str, critical_share: float,
              partitions: int) -> dict:
    t0 = time.time()
    sent_crit = 0
    for _nid, user, payload, crit in tqdm(requests(run, n, users, CHANNEL_MIXES[mix], critical_share),
                                        total=n, desc=f"{run}: publish", unit="req", leave=False):
        topic = "notify.critical" if crit else "notify.requests"
        sent_crit += crit
        produce(prod, topic, user.encode(), payload, partition_for(user, partitions))
    prod.flush(60)
    t_pub = time.time() - t0
    wait_rows(stack.loader_socket, run, n, run)
    first_pub = int(t0 * 1000)
    (last_ms, outcomes), = q(stack.loader_socket, f"""
        SELECT max(event_ms), groupArray((outcome, c)) FROM (
          SELECT outcome, count() c, max(event_ms) event_ms FROM notiflow.receipts
          WHERE notification_id LIKE '{run}-%' GROUP BY outcome)""")
    lat = q(stack.loader_socket, f"""
        SELECT priority, count(), quantile(0.5)(latency_ms), quantile(0.99)(latency_ms)
        FROM notiflow.receipts WHERE notification_id LIKE '{run}-%' AND outcome = 'sent'
        GROUP BY priority ORDER BY priority""")
    secs = (last_ms - first_pub) / 1000
    return {"run": run, "mix": mix, "n": n, "publish_s": t_pub, "e2e_s": secs,
            "rate": n / secs, "outcomes": dict(outcomes), "latency": lat}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--processes", type=int, default=1, help="main-lane Bytewax processes")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--memory-users", type=int, default=1_000_000,
                    help="users' settings+devices for the peak-memory run (0 skips it)")
    ap.add_argument("--skip-push-transports", action="store_true")
    ap.add_argument("--skip-ratelimit", action="store_true",
                    help="skip the rate-limit phase (bench/rate_limit.py)")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma-separated, in this order: {','.join(PHASES)}")
    ap.add_argument("--scaling", default="1x1,2x1,1x2",
                    help="scaling phase: PROCESSESxWORKERS configurations of the main lane")
    ap.add_argument("--scaling-requests", type=int, default=100_000)
    ap.add_argument("--fanout-followers", type=int, default=1_000_000)
    ap.add_argument("--fanout-active", type=float, default=0.05,
                    help="share of followers with recent presence (the hybrid run; 0 skips it)")
    ap.add_argument("--fanout-timeout", type=float, default=900)
    ap.add_argument("--critical-rate", type=float, default=50,
                    help="critical requests/s published while the fan-outs drain")
    ap.add_argument("--plot", type=Path, default=DEFAULT_PLOT,
                    help="deliveries per second per channel, one panel per phase")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    if phases - set(PHASES):
        raise SystemExit(f"--phases: unknown {sorted(phases - set(PHASES))}; known: {PHASES}")
    os.environ["NOTIFLOW_PARTITIONS"] = str(args.partitions)
    panels: list[Panel] = []
    if "e2e" in phases:
        e2e_phases(args, panels)
    if "transports" in phases and not args.skip_push_transports:
        push_transports()
    if "ratelimit" in phases and not args.skip_ratelimit:
        ratelimit()
    if "gateway" in phases:
        from bench.gateway import run as gateway_run

        console.print("[bold]gateway[/] (bench/gateway.py, wrk)")
        gateway_run([1, 32, 512], 5)
    if "memory" in phases and args.memory_users:
        memory_run(args.memory_users, args.partitions)
    if "scaling" in phases:
        scaling.run(args, run_phase, panels)
    if "fanout" in phases:
        fanout.run(args, panels)
    if panels:
        console.print(f"deliveries per second per channel: {save_plot(panels, args.plot)}")


def e2e_phases(args, panels: list[Panel]) -> None:
    """In-app, push, mixed (with 1 % critical): 200k requests each on one stack."""
    from stack.env import start_stack
    from stack.services import start_flow

    work = Path(tempfile.mkdtemp(prefix="notiflow-bench-"))
    stack = start_stack(ROOT, with_flows=False, workdir=work)
    results = []
    flows = []
    try:
        env = stack.env()
        prod = make_producer(stack.brokers)
        with tqdm(total=args.users, desc="load users", unit="user", leave=False) as bar:
            load_users(prod, "notify.", args.users, args.partitions, bar.update)
        flows += start_flow("main", env, processes=args.processes, workers=1,
                            recovery_dir=work / "rec-main", snapshot_s=10)
        flows += start_flow("critical", env, processes=1, workers=1,
                            recovery_dir=work / "rec-critical", snapshot_s=10)
        # warm-up: flows up, bootstrap done, connections open
        results_warm = run_phase(stack, prod, "warm", 2000, args.users, "mixed", 0.01, args.partitions)
        del results_warm
        for mix in ("inapp", "push", "mixed"):
            results.append(run_phase(stack, prod, f"b{mix}", args.requests, args.users, mix,
                                     0.01 if mix == "mixed" else 0.0, args.partitions))
        flow_rss = {f.name: peak_rss_mib(f.pid) for f in flows if f.alive}
        panels.append(plot_fetch(stack.loader_socket, "in-app, push, mixed phases (200k requests "
                                 "each, one after another)", "match(notification_id, '^b')"))
    finally:
        for f in reversed(flows):
            f.stop()
        stack.stop()

    report(args, results, flow_rss)


def report(args, results: list[dict], flow_rss: dict[str, float]) -> None:
    console.print(f"[bold]notiflow bench[/] {platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} cores, Python {platform.python_version()}, "
                  f"main lane: {args.processes} process(es), {args.partitions} partitions, "
                  f"{args.users} users")
    t = Table(title="end to end (first publish -> last receipt in ClickHouse)")
    for c in ("phase", "requests", "e2e s", "requests/s", "outcomes"):
        t.add_column(c)
    for r in results:
        t.add_row(r["mix"], str(r["n"]), f"{r['e2e_s']:.2f}", f"{r['rate']:,.0f}",
                  ", ".join(f"{k}={v}" for k, v in sorted(r["outcomes"].items())))
    console.print(t)
    t = Table(title="latency of sent notifications (created_at -> sent receipt), ms")
    for c in ("phase", "priority", "sent", "p50", "p99"):
        t.add_column(c)
    for r in results:
        for prio, cnt, p50, p99 in r["latency"]:
            t.add_row(r["mix"], prio, str(cnt), f"{p50:.0f}", f"{p99:.0f}")
    console.print(t)
    console.print("peak RSS per flow process (MiB): "
                  + ", ".join(f"{k}={v:.0f}" for k, v in flow_rss.items()))


def push_transports() -> None:
    """Client CPU per request for the two push transports against the sandbox."""
    console.print("[bold]push transports[/] (sinks/push_bench.py)")
    subprocess.run([sys.executable, "-m", "sinks.push_bench"], check=False, cwd=ROOT)


def ratelimit() -> None:
    """The rate-limit error: 4 processes on one shared bucket, and the rate the sandbox
    saw from a rate-limited push run through the real sink (bench/rate_limit.py)."""
    from bench.rate_limit import run as rate_limit_run

    console.print("[bold]rate limits[/] (bench/rate_limit.py)")
    rate_limit_run(processes=4, rate=1000, seconds=10, push_rate=2000, push_seconds=10)


def memory_run(users: int, partitions: int) -> None:
    """Peak RSS of one flow process holding ``users`` users' settings and devices."""
    from stack.env import start_stack
    from stack.services import start_flow

    work = Path(tempfile.mkdtemp(prefix="notiflow-mem-"))
    stack = start_stack(ROOT, with_flows=False, workdir=work)
    flows = []
    try:
        prod = make_producer(stack.brokers)
        with tqdm(total=users, desc="memory run: load users", unit="user", leave=False) as bar:
            load_users(prod, "notify.", users, partitions, bar.update)
        flows = start_flow("main", stack.env(), processes=1, workers=1,
                           recovery_dir=work / "rec", snapshot_s=30)
        t0 = time.time()
        # one request per partition, sent after the settings: its receipt means bootstrap is done
        for p in range(partitions):
            i = next(i for i in range(users) if partition_for(user_id(i), partitions) == p)
            payload = orjson.dumps({"v": 1, "id": f"mem{p}", "type": "bench.event",
                                    "recipients": [user_id(i)], "channels": ["inapp"],
                                    "body": "memory probe", "created_at": int(time.time() * 1000)})
            produce(prod, "notify.requests", user_id(i).encode(), payload, p)
        prod.flush(30)
        sql = "SELECT count() FROM notiflow.receipts WHERE notification_id LIKE 'mem%'"
        while q(stack.loader_socket, sql)[0][0] < partitions:
            time.sleep(0.5)
        load_s = time.time() - t0
        rss = peak_rss_mib(flows[0].pid)
        console.print(f"[bold]memory[/]: {users:,} users' settings + devices in state: "
                      f"flow peak RSS {rss:,.0f} MiB (VmHWM), bootstrap {load_s:.1f} s")
    finally:
        for f in flows:
            f.stop()
        stack.stop()


if __name__ == "__main__":
    main()
