"""Clients of the loader: named queries over HTTP (with the token), raw SQL over its socket.

One module so that the gateway, ``make stats``, ``make fanout-status``, bench and tests ask
the loader the same way. Addresses come from the arguments, else the environment
(``NOTIFLOW_STATS_URL``, ``NOTIFLOW_LOADER_TOKEN``, ``NOTIFLOW_LOADER_SOCKET``), else a
running ``make run``'s var/stack.env, else the settings' defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import httpx

from notiflow.config import Settings, get_settings
from notiflow.local_stack import read_env_file

TIMEOUT_S = 30.0


class LoaderError(Exception):
    """The loader refused (``status``: its HTTP status) or could not be reached (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status or 'unreachable'}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[list[Any]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Loader:
    """Where the loader is and the token it wants."""

    url: str
    token: str = field(repr=False)  # a repr may end up in a log
    socket: str = ""

    @classmethod
    def from_settings(cls, cfg: Settings) -> Loader:
        """The loader a service's settings name (the gateway's)."""
        return cls(cfg.stats_url.rstrip("/"), cfg.loader_token.get_secret_value(),
                   cfg.loader_socket)

    @classmethod
    def from_env(cls, url: str | None = None) -> Loader:
        env, cfg = read_env_file(), get_settings()

        def pick(name: str, default: str) -> str:
            return os.environ.get(name) or env.get(name) or default

        return cls(url=(url or pick("NOTIFLOW_STATS_URL", cfg.stats_url)).rstrip("/"),
                   token=pick("NOTIFLOW_LOADER_TOKEN", cfg.loader_token.get_secret_value()),
                   socket=pick("NOTIFLOW_LOADER_SOCKET", cfg.loader_socket))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def run(self, name: str, timeout: float = TIMEOUT_S, **params: Any) -> Result:
        """Rows of the named query (loader/queries.py). Raises LoaderError."""
        try:
            r = httpx.post(f"{self.url}/query", json={"name": name, "params": params},
                           headers=self._headers(), timeout=timeout)
        except httpx.HTTPError as exc:
            raise LoaderError(0, f"{self.url}: {exc!r}") from exc
        return _result(r)

    async def arun(self, name: str, timeout: float = TIMEOUT_S, **params: Any) -> Result:
        """``run`` for async callers (the gateway)."""
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                r = await client.post(f"{self.url}/query", json={"name": name, "params": params},
                                      headers=self._headers())
        except httpx.HTTPError as exc:
            raise LoaderError(0, f"{self.url}: {exc!r}") from exc
        return _result(r)

    def flushed(self, timeout: float = 60, min_rows: int | None = None) -> dict[str, Any]:
        """Wait until the loader has loaded ``min_rows`` rows, or (None) everything on the
        topic; its progress. Raises LoaderError (504 when the wait timed out)."""
        params: dict[str, Any] = {"timeout": timeout}
        if min_rows is not None:
            params["min_rows"] = min_rows
        try:
            r = httpx.get(f"{self.url}/flushed", params=params, headers=self._headers(),
                          timeout=timeout + 10)
        except httpx.HTTPError as exc:
            raise LoaderError(0, f"{self.url}: {exc!r}") from exc
        if r.status_code != 200:
            raise LoaderError(r.status_code, r.text[:300])
        return r.json()

    def sql(self, text: str, timeout: float = 60) -> Result:
        """Raw read-only SQL through the loader's unix socket (local user only)."""
        return local_sql(self.socket, text, timeout)


def local_sql(socket: str, text: str, timeout: float = 60) -> Result:
    """Raw read-only SQL through the loader's unix socket at ``socket``. Raises LoaderError."""
    if not socket:
        raise LoaderError(0, "no loader socket (NOTIFLOW_LOADER_SOCKET, or `make run`)")
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=socket), timeout=timeout) as c:
            r = c.post("http://loader/sql", content=text.encode())
    except httpx.HTTPError as exc:
        raise LoaderError(0, f"{socket}: {exc!r}") from exc
    return _result(r)


def _result(r: httpx.Response) -> Result:
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code != 200:
        why = body.get("error") if isinstance(body, dict) else None
        raise LoaderError(r.status_code, str(why or r.text[:300]))
    if not isinstance(body, dict) or "columns" not in body or "rows" not in body:
        raise LoaderError(r.status_code, f"answer without rows: {r.text[:300]}")
    return Result(columns=body["columns"], rows=body["rows"])
