"""One blocking httpx POST for the SES / Mailgun / Vonage sinks, as an ``HttpResp``.

A transport error (connection refused, timeout) becomes ``HttpResp(0, error=...)`` so each
sink's pure ``classify`` sees every outcome in one shape (the same one the push sinks use).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from schemas.task import DeliveryTask
from sinks import results as R
from sinks.push_transport import HttpReq, HttpResp


def make_client(timeout_s: float) -> httpx.Client:
    return httpx.Client(timeout=timeout_s)


def send_each(client: httpx.Client, tasks: list[DeliveryTask], provider: str,
              build: Callable[[DeliveryTask], HttpReq],
              classify: Callable[[DeliveryTask, HttpResp], R.SendResult]) -> list[R.SendResult]:
    """One POST per task, in order; a task whose request cannot be built fails alone."""
    out = []
    for t in tasks:
        try:
            req = build(t)
        except Exception as e:
            out.append(R.payload_failed(t, provider, e))
            continue
        out.append(classify(t, post(client, req)))
    return out


def post(client: httpx.Client, req: HttpReq) -> HttpResp:
    try:
        r = client.post(req.url, headers=req.headers, content=req.body)
    except httpx.TransportError as e:
        return HttpResp(0, {}, b"", f"{type(e).__name__}: {e}")
    return HttpResp(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
