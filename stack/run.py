"""`make run`: the whole local stack in the foreground until Ctrl-C.

Starts Kafka (Tansu), Redis, the provider sandbox, the loader (chDB), the topics, then the
main, critical and retry flows; prints what runs where; and watches them.  Ctrl-C or
SIGTERM stops everything in reverse order; a child that dies on its own is named with its
log tail and the rest is stopped (exit status 1), since a half-running pipeline would only
hide the failure.

    python -m stack.run [--main-processes N] [--workers N] [--snapshot-s S]
    (defaults: NOTIFLOW_FLOW_PROCESSES, NOTIFLOW_FLOW_WORKERS; both 1)
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from notiflow.config import Settings
from stack.env import ROOT, Stack, start_stack

console = Console(width=None if sys.stdout.isatty() else 160)  # logs/CI: no folding


class _Stop(Exception):
    """Raised by the signal handler while the stack is still starting."""


def table(stack: Stack) -> Table:
    t = Table(title="notiflow is running")
    for c in ("part", "pid", "where", "log"):
        t.add_column(c)
    names = {s.name for s in stack.services}
    for part, where in (("kafka", stack.brokers), ("redis", stack.redis_url),
                        ("clickhouse", stack.clickhouse_url)):
        if where and part not in names:
            t.add_row(f"{part} (external)", "-", where, "")
    for s in stack.services:
        log = s.log_path.relative_to(ROOT) if s.log_path.is_relative_to(ROOT) else s.log_path
        where = s.url or "Bytewax flow"
        if s.name == "loader" and stack.chdb_path:
            where += f"  (chDB {stack.chdb_path})"
        t.add_row(s.name, str(s.pid), where, str(log))
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cfg = Settings()
    ap.add_argument("--main-processes", type=int, default=cfg.flow_processes,
                    help="Bytewax processes for the bulk lane (NOTIFLOW_FLOW_PROCESSES)")
    ap.add_argument("--workers", type=int, default=cfg.flow_workers,
                    help="worker threads per flow process (NOTIFLOW_FLOW_WORKERS)")
    ap.add_argument("--snapshot-s", type=float, default=5, help="recovery snapshot interval")
    ap.add_argument("--workdir", type=Path, default=ROOT / "var",
                    help="logs, recovery, spool, chDB and stack.env (default var/)")
    args = ap.parse_args(argv)
    if args.main_processes * args.workers > cfg.partitions:
        ap.error(f"{args.main_processes} process(es) x {args.workers} worker(s) > "
                 f"NOTIFLOW_PARTITIONS={cfg.partitions}: one Kafka partition feeds one "
                 f"worker, so the extra workers would idle; raise NOTIFLOW_PARTITIONS")

    state = {"starting": True, "stop": False}

    def on_signal(signum, _frame):
        state["stop"] = True
        if state["starting"]:
            raise _Stop(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    try:
        with console.status("starting Kafka (Tansu), Redis, provider sandbox, loader (chDB), "
                            "topics, gateway, flows..."):
            stack = start_stack(ROOT, workdir=args.workdir, with_flows=True, with_gateway=True,
                                main_processes=args.main_processes, workers=args.workers,
                                snapshot_s=args.snapshot_s)
    except _Stop as e:
        console.print(f"{e}: stopped while starting.")
        return 130
    except Exception as e:  # noqa: BLE001 (say what failed; start_stack cleaned up)
        console.print(f"[red]could not start the stack:[/] {e}")
        return 1
    state["starting"] = False

    console.print(table(stack))
    env_file = stack.env_file
    console.print(f"Stack variables: "
                  f"{env_file.relative_to(ROOT) if env_file.is_relative_to(ROOT) else env_file}")
    if stack.gateway_url:
        console.print(f"HTTP gateway: {stack.gateway_url}  (API docs {stack.gateway_url}/docs)\n"
                      f"Dev API key (scopes *, admin, broadcast): [bold]{stack.dev_api_key}[/]\n"
                      f"  curl -s {stack.gateway_url}/v1/notifications -H 'Authorization: Bearer "
                      f"{stack.dev_api_key}' -d '{{\"type\":\"social.like\",\"recipients\":"
                      f"[\"sample-user\"],\"title\":\"hi\"}}'\n"
                      f"Dashboard: {stack.gateway_url}/dashboard?key={stack.dev_api_key}",
                      soft_wrap=True)
    console.print("Send a sample notification:  [bold]make sample[/]    "
                  "Receipts:  [bold]make stats[/]    Stop: Ctrl-C")
    rc = 0
    try:
        while not state["stop"]:
            dead = [s for s in stack.services if not s.alive]
            if dead:
                for s in dead:
                    console.print(f"[red]{s.name} exited unexpectedly with {s.returncode}[/] "
                                  f"(log {s.log_path}):\n{s.log_tail()}")
                rc = 1
                break
            time.sleep(0.5)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut teardown
        console.print("stopping...")
        stack.stop()
        console.print("stopped.")
    return rc


if __name__ == "__main__":
    sys.exit(main())
