"""`make run`: the whole local stack in the foreground until Ctrl-C.

Starts Kafka (Tansu), Redis, the provider sandbox, the loader (chDB), the topics, the
gateway, then the main, critical and retry flows; prints what runs where; and watches them.

A flow lane that dies is restarted as a whole (all its processes: Bytewax processes of one
cluster cannot rejoin alone), resuming from its last snapshot, after a backoff of 1 s, 2 s,
4 s ... (at most 30 s), with its log tail printed; a lane that dies more than
NOTIFLOW_RUNNER_MAX_RESTARTS times in NOTIFLOW_RUNNER_RESTART_WINDOW_S, or any other part
that dies, stops everything (exit status 1): a half-running pipeline would only hide it.

Ctrl-C, SIGTERM or SIGHUP (a closed terminal) stop everything in reverse order.  Stopping
never depends on the output: the runner stops its parts first and prints after, and a
closed pipe or terminal only silences it.  Should the runner itself be killed (kill -9),
its parts die with it (stack/services.py).

    python -m stack.run [--main-processes N] [--workers N] [--snapshot-s S] [--no-flows]
    (defaults: NOTIFLOW_FLOW_PROCESSES, NOTIFLOW_FLOW_WORKERS; both 1)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from notiflow.config import Settings
from stack.env import ROOT, Stack, start_stack
from stack.restarts import RestartPolicy
from stack.services import shown_url


def _silence() -> None:
    """The output is gone (closed pipe, hung-up terminal): send the rest to /dev/null, so
    that no later write, nor the interpreter's last flush, fails again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Rich exits (SystemExit 1) on a broken pipe: the runner only goes quiet."""
        self.quiet = True
        _silence()


console = _Console(width=None if sys.stdout.isatty() else 160)  # logs/CI: no folding


def guarded(call: Callable[..., Any], *args: Any, **kw: Any) -> None:
    """Run an output call; if the output is gone, silence it and go on."""
    try:
        call(*args, **kw)
    except (OSError, ValueError):  # BrokenPipeError, EIO, a closed file
        _silence()


def say(*objects: Any, **kw: Any) -> None:
    guarded(console.print, *objects, **kw)


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
            t.add_row(f"{part} (external)", "-", shown_url(where), "")
    for s in stack.services:
        log = s.log_path.relative_to(ROOT) if s.log_path.is_relative_to(ROOT) else s.log_path
        where = shown_url(s.url) or "Bytewax flow"
        if s.name == "loader" and stack.chdb_path:
            where += f"  (chDB {stack.chdb_path})"
        t.add_row(s.name, str(s.pid), where, str(log))
    return t


def welcome(stack: Stack) -> None:
    say(table(stack))
    env_file = stack.env_file
    say(f"Stack variables and secrets (mode 0600): "
        f"{env_file.relative_to(ROOT) if env_file.is_relative_to(ROOT) else env_file}")
    if stack.gateway_url:
        say(f"HTTP gateway: {stack.gateway_url}  (API docs {stack.gateway_url}/docs)")
        if stack.dev_api_key:
            say(f"Dev API key (scopes *, admin, broadcast; revoked when this stops): "
                f"[bold]{stack.dev_api_key}[/]\n"
                f"  curl -s {stack.gateway_url}/v1/notifications -H 'Authorization: Bearer "
                f"{stack.dev_api_key}' -d '{{\"type\":\"social.like\",\"recipients\":"
                f"[\"sample-user\"],\"title\":\"hi\"}}'\n"
                f"Dashboard: {stack.gateway_url}/dashboard  (paste the dev API key into the "
                f"page)", soft_wrap=True)
        else:
            say("No dev API key: this Redis was not started by the stack, so none is made "
                "in it; make one with [bold]make api-key NAME=...[/]")
    say("Send a sample notification:  [bold]make sample[/]    "
        "Receipts:  [bold]make stats[/]    Stop: Ctrl-C")


class Supervisor:
    """Watches the stack's parts: restarts a dead flow lane under its RestartPolicy; any
    other part dying, or a lane out of restarts, ends the run (``check`` returns 1)."""

    def __init__(self, stack: Stack, policy: Callable[[], RestartPolicy],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stack = stack
        self.policies = {lane: policy() for lane in stack.lanes}
        self.due: dict[str, float] = {}  # lane -> when to start it again
        self.clock = clock

    def check(self) -> int | None:
        """One look at every part: None while the run goes on, else its exit status."""
        dead = [s for s in self.stack.services if not s.alive]
        for s in dead:
            say(f"[red]{s.name} exited unexpectedly with {s.returncode}[/] "
                f"(log {s.log_path}):\n{s.log_tail()}")
        if any(not s.lane for s in dead):
            return 1
        for lane in dict.fromkeys(s.lane for s in dead):
            self.stack.stop_lane(lane)  # its other processes cannot go on alone
            if not self._schedule(lane):
                return 1
        for lane, when in list(self.due.items()):
            if self.clock() >= when:
                del self.due[lane]
                try:
                    started = self.stack.start_lane(lane)
                except Exception as e:  # noqa: BLE001 (died while starting: another death)
                    say(f"[red]lane {lane} failed to start again:[/] {e}")
                    if not self._schedule(lane):
                        return 1
                    continue
                say(f"lane {lane} restarted: "
                    + ", ".join(f"{s.name} pid {s.pid}" for s in started))
        return None

    def _schedule(self, lane: str) -> bool:
        p = self.policies[lane]
        delay = p.died()
        if delay is None:
            say(f"[red]lane {lane} died {p.recent_deaths()} times in {p.window_s:g} s: "
                f"not restarting it again; stopping everything[/]")
            return False
        say(f"restarting lane {lane} in {delay:g} s ({p.recent_deaths()} death(s) in "
            f"{p.window_s:g} s, at most {p.max_restarts})")
        self.due[lane] = self.clock() + delay
        return True


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
    ap.add_argument("--no-flows", action="store_true",
                    help="every part but the flows (the gateway and loader alone)")
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

    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a closed pipe is an error to ignore
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    status = console.status("starting Kafka (Tansu), Redis, provider sandbox, loader (chDB), "
                            "topics, gateway, flows...")
    guarded(status.start)
    try:
        stack = start_stack(ROOT, workdir=args.workdir, with_flows=not args.no_flows,
                            with_gateway=True, main_processes=args.main_processes,
                            workers=args.workers, snapshot_s=args.snapshot_s)
    except _Stop as e:  # start_stack stopped what it had started
        guarded(status.stop)
        say(f"{e}: stopped while starting.")
        return 130
    except Exception as e:  # noqa: BLE001 (say what failed; start_stack cleaned up)
        guarded(status.stop)
        say(f"[red]could not start the stack:[/] {e}")
        return 1
    rc = 0
    try:
        state["starting"] = False
        guarded(status.stop)
        welcome(stack)
        supervisor = Supervisor(stack, lambda: RestartPolicy(
            cfg.runner_max_restarts, cfg.runner_restart_window_s))
        while not state["stop"]:
            if (rc := supervisor.check() or 0):
                break
            time.sleep(0.5)
    except _Stop:  # a signal between start_stack's return and the flag: stop as asked
        pass
    finally:
        # nothing may cut the teardown short: further signals are ignored, and nothing is
        # printed before the parts are stopped (a closed pipe or terminal cannot stop it)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        try:
            stack.stop()
        except Exception as e:  # noqa: BLE001 (report it; everything else was stopped)
            say(f"[red]{e}[/]")
            rc = 1
        say("stopped.")
    return rc


if __name__ == "__main__":
    sys.exit(main())
