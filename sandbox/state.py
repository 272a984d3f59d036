"""What the sandbox remembers: accepted messages, status counts and injected faults.

Recording is one tuple append per accepted message; dicts are built only when read.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

PROVIDERS = ("apns", "fcm", "sendgrid", "twilio")
FIELDS = ("provider", "target", "nid", "title", "body", "collapse_id", "priority", "ts_ms")


@dataclass
class Fault:
    rate: float = 1.0  # fraction of requests that fail
    status: int = 503
    reason: str = ""
    retry_after: float | None = None
    latency_ms: float = 0.0  # added to every request of the provider
    count: int | None = None  # only the next N requests

    def fires(self) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.rate >= 1.0 or random.random() < self.rate:
            if self.count is not None:
                self.count -= 1
            return True
        return False


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.messages: list[tuple] = []
        self.status: dict[str, Counter] = defaultdict(Counter)
        self.faults: dict[str, Fault] = {}

    def accept(self, provider: str, target: str, nid: str, title: str | None, body: str | None,
               collapse_id: str | None = None, priority: str | None = None) -> None:
        self.messages.append((provider, target, nid, title, body, collapse_id, priority,
                              int(time.time() * 1000)))

    def count(self, provider: str, status: int) -> None:
        self.status[provider][status] += 1

    def read(self, provider: str | None, offset: int, limit: int) -> dict:
        rows = [m for m in self.messages if provider is None or m[0] == provider]
        page = rows[offset : offset + limit]
        return {"messages": [dict(zip(FIELDS, m, strict=True)) for m in page],
                "next": offset + len(page), "total": len(rows)}

    def stats(self) -> dict:
        out = {}
        for p in PROVIDERS:
            c = self.status.get(p, Counter())
            ok = sum(n for s, n in c.items() if s < 300)
            out[p] = {"accepted": ok, "rejected": sum(c.values()) - ok,
                      "by_status": {str(s): n for s, n in sorted(c.items())}}
        return out
