"""`make run`: the whole local stack in the foreground; Ctrl-C stops it all.

    python -m stack.run [--main-processes N]
"""

from __future__ import annotations

import argparse
import signal
import time

from rich.console import Console
from rich.table import Table

from stack.env import ROOT, start_stack

console = Console(width=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--main-processes", type=int, default=1,
                    help="Bytewax processes for the bulk lane (partitions must be >= this)")
    args = ap.parse_args()

    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    with console.status("starting Kafka (Tansu), Redis, provider sandbox, loader/chDB, flows..."):
        stack = start_stack(ROOT, workdir=ROOT / "var", with_flows=True,
                            main_processes=args.main_processes)
    env_file = ROOT / "var" / "stack.env"
    stack.write_env_file(env_file)
    t = Table(title="notiflow is running")
    for c in ("part", "pid", "where", "log"):
        t.add_column(c)
    names = {s.name for s in stack.services}
    if "kafka" not in names:
        t.add_row("kafka (external)", "-", stack.brokers, "")
    if "redis" not in names:
        t.add_row("redis (external)", "-", stack.redis_url, "")
    for s in stack.services:
        t.add_row(s.name, str(s.pid), s.url or "(Bytewax flow)", str(s.log_path.relative_to(ROOT))
                  if s.log_path.is_relative_to(ROOT) else str(s.log_path))
    console.print(t)
    console.print("Send a sample notification:  [bold]make sample[/]    "
                  "Receipts:  [bold]make stats[/]    Stop: Ctrl-C")
    try:
        while not stopping:
            dead = [s for s in stack.services if not s.alive]
            if dead:
                for s in dead:
                    console.print(f"[red]{s.name} exited[/] ({s.log_path}):\n{s.log_tail()}")
                break
            time.sleep(0.5)
    finally:
        console.print("stopping...")
        stack.stop()
        env_file.unlink(missing_ok=True)
        console.print("stopped.")


if __name__ == "__main__":
    main()
