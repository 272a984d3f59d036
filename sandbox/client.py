"""A small client of the sandbox's control API, for tests and the benchmark."""

from __future__ import annotations

import httpx


class SandboxControl:
    def __init__(self, base_url: str) -> None:
        self._c = httpx.Client(base_url=base_url, timeout=30)

    def reset(self) -> None:
        self._c.post("/_sandbox/reset").raise_for_status()

    def faults(self, provider: str, **spec) -> None:
        self._c.post("/_sandbox/faults", json={"provider": provider, **spec}).raise_for_status()

    def clear_faults(self) -> None:
        self._c.delete("/_sandbox/faults").raise_for_status()

    def messages(self, provider: str | None = None) -> list[dict]:
        params = {"provider": provider} if provider else {}
        r = self._c.get("/_sandbox/messages", params=params)
        r.raise_for_status()
        return r.json()["messages"]

    def stats(self) -> dict:
        r = self._c.get("/_sandbox/stats")
        r.raise_for_status()
        return r.json()
