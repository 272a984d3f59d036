"""What the sandbox remembers: accepted messages, status counts and injected faults.

It lives in the one granian worker process. Recording sits on the per-request path of a
push benchmark, so it is one tuple append per accepted message and one dict increment per
answer; dicts for the control API, and the devices' notification lists
(sandbox/devices.py), are built only when someone reads them.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

from sandbox.devices import Devices, Figures

PROVIDERS = ("apns", "fcm", "sendgrid", "twilio", "ses", "mailgun", "vonage")
FIELDS = ("provider", "target", "nid", "title", "body", "collapse_id", "priority", "ts_ms")


@dataclass(slots=True)
class Fault:
    """Injected trouble for one provider.

    ``rate`` is the fraction of requests that fail with ``status`` (only the next ``count``
    of them when ``count`` is set); ``latency_ms`` delays every request of the provider.
    """

    rate: float = 1.0
    status: int = 503
    reason: str = ""
    retry_after: float | None = None
    latency_ms: float = 0.0
    count: int | None = None

    @classmethod
    def parse(cls, spec: dict) -> Fault:
        """A fault from the control API's JSON; a spec that only sets latency fails nothing."""
        spec = dict(spec)
        if "rate" not in spec and spec.get("latency_ms") and not {"status", "count"} & spec.keys():
            spec["rate"] = 0.0
        f = cls(**spec)
        f.rate, f.status, f.latency_ms = float(f.rate), int(f.status), float(f.latency_ms or 0)
        if not 0.0 <= f.rate <= 1.0 or not 400 <= f.status <= 599 or f.latency_ms < 0:
            raise ValueError("rate must be in 0..1, status in 400..599, latency_ms >= 0")
        if f.count is not None:
            f.count = int(f.count)
        return f

    def fires(self) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.rate >= 1.0 or (self.rate > 0.0 and random.random() < self.rate):
            if self.count is not None:
                self.count -= 1
            return True
        return False


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.seq = 0
        self.messages: dict[str, list[tuple]] = {p: [] for p in PROVIDERS}
        self.status: dict[str, dict[int, int]] = {p: {} for p in PROVIDERS}
        self.faults: dict[str, Fault] = {}
        self.devices: dict[str, Devices] = {p: Devices() for p in PROVIDERS}
        self._folded: dict[str, int] = dict.fromkeys(PROVIDERS, 0)  # messages folded in

    def accept(self, provider: str, target: str, nid: str | None, title: str | None,
               body: str | None, collapse_id: str | None = None,
               priority: str | None = None) -> None:
        self.seq += 1
        self.messages[provider].append((self.seq, target, nid, title, body, collapse_id,
                                        priority, time.time_ns() // 1_000_000))

    def count(self, provider: str, status: int) -> None:
        c = self.status[provider]
        c[status] = c.get(status, 0) + 1

    def read(self, provider: str | None, offset: int, limit: int) -> dict:
        """Accepted messages in arrival order (of one provider, or of all)."""
        if provider is not None:
            rows = [(provider, m) for m in self.messages[provider][offset : offset + limit]]
        else:
            merged = sorted((m[0], p, m) for p in PROVIDERS for m in self.messages[p])
            rows = [(p, m) for _, p, m in merged[offset : offset + limit]]
        out = [dict(zip(FIELDS, (p, *m[1:]), strict=True)) for p, m in rows]
        return {"messages": out, "next": offset + len(out)}

    def stats(self) -> dict:
        out = {}
        for p in PROVIDERS:
            c = self.status[p]
            ok = sum(n for s, n in c.items() if s < 300)
            out[p] = {"accepted": ok, "rejected": sum(c.values()) - ok,
                      "by_status": {str(s): n for s, n in sorted(c.items())}}
        return out

    def visible(self, provider: str | None = None, target_prefix: str = "") -> dict:
        """What people would see on their devices (of one provider, or of all; of the
        targets starting with ``target_prefix``): devices, notifications shown, visible and
        transport duplicates (sandbox/devices.py).  Folds in the messages accepted since
        the last call."""
        out = Figures()
        for p in (provider,) if provider is not None else PROVIDERS:
            msgs, devs = self.messages[p], self.devices[p]
            for m in msgs[self._folded[p]:]:
                devs.add(m[1], m[2], m[5])
            self._folded[p] = len(msgs)
            out.add(devs.figures_of(target_prefix) if target_prefix else devs.figures)
        return asdict(out)
