"""When `make run` may start a dead flow lane again.

Why: in production something (Kubernetes, systemd) restarts a flow that died, and the lane
resumes from its last snapshot; the crash-loop breaker counts on those restarts to get past
a record that kills the flow.  The local runner does the same, with a backoff so a flow
that dies at once does not spin, and a limit so one that keeps dying stops the stack for a
person to read its log instead of restarting forever.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RestartPolicy:
    """Deaths of one lane: ``died()`` says how long to wait before starting it again, or
    None once it has died more than ``max_restarts`` times within ``window_s``.

    The wait doubles with each death in the window (``first_delay_s``, 2x, 4x, ... up to
    ``max_delay_s``) and shrinks again as old deaths leave the window."""

    def __init__(self, max_restarts: int = 10, window_s: float = 300.0,
                 first_delay_s: float = 1.0, max_delay_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_restarts < 0 or window_s <= 0 or first_delay_s < 0 or max_delay_s < first_delay_s:
            raise ValueError("restart policy: max_restarts >= 0, window_s > 0, "
                             "0 <= first_delay_s <= max_delay_s")
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._deaths: deque[float] = deque()

    def recent_deaths(self) -> int:
        """Deaths within the window, as of now."""
        self._forget(self._clock())
        return len(self._deaths)

    def died(self) -> float | None:
        """Record a death now: seconds to wait before the restart, or None (give up)."""
        now = self._clock()
        self._forget(now)
        self._deaths.append(now)
        n = len(self._deaths)
        if n > self.max_restarts:
            return None
        return min(self.max_delay_s, self.first_delay_s * 2 ** min(n - 1, 32))

    def _forget(self, now: float) -> None:
        while self._deaths and self._deaths[0] <= now - self.window_s:
            self._deaths.popleft()
