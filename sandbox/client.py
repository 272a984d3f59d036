"""A small client of the sandbox's control API (``/_sandbox/``), for tests and the benchmark."""

from __future__ import annotations

from typing import Any

import httpx


class SandboxControl:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self._c = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._c.close()

    def health(self) -> bool:
        try:
            return self._c.get("/_sandbox/health").json().get("ok") is True
        except httpx.HTTPError:
            return False

    def reset(self) -> None:
        """Forget messages, stats and faults."""
        self._c.post("/_sandbox/reset").raise_for_status()

    def faults(self, provider: str, **spec: Any) -> None:
        """Inject failures, e.g. ``faults("apns", status=429, rate=1, count=2, retry_after=3)``;
        ``latency_ms`` alone slows every request of the provider without failing any."""
        r = self._c.post("/_sandbox/faults", json={"provider": provider, **spec})
        if r.status_code != 200:
            raise ValueError(r.text)

    def clear_faults(self) -> None:
        self._c.delete("/_sandbox/faults").raise_for_status()

    def messages(self, provider: str | None = None, offset: int = 0,
                 page: int = 100_000) -> list[dict]:
        """Accepted messages (all of them from ``offset`` on), in arrival order."""
        out: list[dict] = []
        while True:
            params: dict[str, Any] = {"offset": offset, "limit": page}
            if provider:
                params["provider"] = provider
            r = self._c.get("/_sandbox/messages", params=params)
            r.raise_for_status()
            got = r.json()
            out += got["messages"]
            if len(got["messages"]) < page:
                return out
            offset = got["next"]

    def stats(self) -> dict:
        r = self._c.get("/_sandbox/stats")
        r.raise_for_status()
        return r.json()

    def visible(self, provider: str | None = None, target_prefix: str = "") -> dict[str, int]:
        """What people would see: {"devices", "shown", "visible_duplicates",
        "transport_duplicates"} (sandbox/devices.py), of one provider or of all, of the
        devices whose target starts with ``target_prefix`` (all when empty)."""
        params = {k: v for k, v in (("provider", provider), ("target_prefix", target_prefix))
                  if v}
        r = self._c.get("/_sandbox/visible", params=params)
        r.raise_for_status()
        return r.json()
