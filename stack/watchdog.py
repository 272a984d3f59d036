"""Kills the process groups of a stack's parts once the process that started them is gone.

Why: a runner killed with SIGKILL (or any death that runs no cleanup) cannot stop its
children, and PR_SET_PDEATHSIG reaches only the direct children (not what they start
themselves).  The starter (stack/services.py) runs one watchdog per process with a pipe to
its stdin and writes ``+ PGID`` for each group it starts and ``- PGID`` for each it has
stopped itself.  End of file on that pipe means the starter is gone however it ended:
every group still listed gets SIGTERM, then SIGKILL after a grace period.

The watchdog has its own session: a Ctrl-C, or the hangup of a closed terminal, that ends
the runner must not end the one process that cleans up after it.

    python -m stack.watchdog   (started by stack.services; reads its stdin)
"""

from __future__ import annotations

import os
import signal
import sys
import time

GRACE_S = 5.0


def _signal(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the number was reused by someone else's group: not ours
        return False
    return True


def kill_groups(groups: set[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM every group, then SIGKILL whatever is left of them after ``grace_s``."""
    left = {g for g in groups if _signal(g, signal.SIGTERM)}
    deadline = time.monotonic() + grace_s
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {g for g in left if _signal(g, 0)}
    for g in left:
        _signal(g, signal.SIGKILL)


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin.buffer:  # blocks until the next line; ends when the starter is gone
        op, _, pgid = line.strip().partition(b" ")
        if not pgid.isdigit():
            continue
        if op == b"+":
            groups.add(int(pgid))
        elif op == b"-":
            groups.discard(int(pgid))
    kill_groups(groups)
    return 0


if __name__ == "__main__":
    sys.exit(main())
