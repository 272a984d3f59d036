"""The loader's HTTP endpoint against numbers an attacker writes: each gets a prompt 4xx.

``float("nan")`` once made ``/flushed`` spin a core forever (``min(nan, 300)`` is nan, and
``Condition.wait_for`` never ends on it), and ``"²".isdigit()`` is True while ``int("²")``
raises, which dropped the connection with a traceback. The server runs in-process on a
stand-in store: these checks come before any query.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from loader.api import serve
from loader.ingest import Progress

TOKEN = "t" * 40


class _Store:
    backend = "test"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    progress = Progress(rows_total=5)
    server = serve(_Store(), progress, "127.0.0.1", 0, TOKEN)  # type: ignore[arg-type]
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _flushed(url: str, **params: str) -> httpx.Response:
    return httpx.get(f"{url}/flushed", params=params, timeout=5,
                     headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.mark.parametrize("timeout", ["nan", "NaN", "inf", "-inf", "1e999", "-1", "1_0",
                                     "\u0661", " 1", "x"])
def test_flushed_refuses_a_timeout_that_is_not_plain_seconds(url: str, timeout: str) -> None:
    r = _flushed(url, timeout=timeout, min_rows="0")
    assert r.status_code == 422 and r.json()["field"] == "timeout", r.text


@pytest.mark.parametrize("min_rows", ["-1", "1.5", "\u0661", "1_0", "1" * 11])
def test_flushed_refuses_a_min_rows_that_is_not_plain_digits(url: str, min_rows: str) -> None:
    r = _flushed(url, timeout="0", min_rows=min_rows)
    assert r.status_code == 422 and r.json()["field"] == "min_rows", r.text


@pytest.mark.parametrize(("timeout", "min_rows", "status"),
                         [("0", "5", 200), ("0.5", "6", 504), ("1e-3", "6", 504),
                          ("1e9", "5", 200)])  # over MAX_WAIT_S: clamped, not refused
def test_flushed_takes_plain_seconds(url: str, timeout: str, min_rows: str, status: int) -> None:
    assert _flushed(url, timeout=timeout, min_rows=min_rows).status_code == status


def _raw_post(url: str, content_length: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + TOKEN.encode() + b"\r\nContent-Length: " + content_length + b"\r\n\r\n{}")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("length", ["\u00b2", "\u00b9", "1\u00b2", "-1", "1e3", "0x10",
                                    "1_0", "1" * 11])
def test_a_content_length_that_is_not_plain_digits_gets_400(url: str, length: str) -> None:
    answer = _raw_post(url, length.encode("latin-1"))
    assert answer.startswith(b"HTTP/1.1 400"), (length, answer[:200])
