"""The RSGI app (granian): routes by path to a provider or to the control API.

Kept lean: the sandbox shares the 2 cores with the pipeline it measures.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import orjson

from sandbox import providers
from sandbox.state import PROVIDERS, Fault, State

state = State()
_ROUTES = (("/3/device/", "apns", providers.apns), ("/v1/projects/", "fcm", providers.fcm),
           ("/v3/mail/send", "sendgrid", providers.sendgrid),
           ("/2010-04-01/Accounts/", "twilio", providers.twilio))


def _control(method: str, path: str, query: str, body: bytes) -> providers.Resp:
    j = providers._json
    if path == "/_sandbox/health":
        return j(200, {"ok": True})
    if path == "/_sandbox/reset" and method == "POST":
        state.reset()
        return j(200, {"ok": True})
    if path == "/_sandbox/faults":
        if method == "DELETE":
            state.faults.clear()
            return j(200, {"ok": True})
        if method == "POST":
            try:
                spec = orjson.loads(body)
                provider = spec.pop("provider")
                if provider not in PROVIDERS:
                    raise ValueError(f"provider must be one of {PROVIDERS}")
                state.faults[provider] = Fault(**spec)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                return j(400, {"error": f"bad fault spec: {e}"})
            return j(200, {"ok": True})
    if path == "/_sandbox/messages":
        qs = {k: v[0] for k, v in parse_qs(query).items()}
        return j(200, state.read(qs.get("provider"), int(qs.get("offset", 0)),
                                 int(qs.get("limit", 1_000_000))))
    if path == "/_sandbox/stats":
        return j(200, state.stats())
    return j(404, {"error": f"no such control endpoint {method} {path}"})


async def app(scope, proto) -> None:
    if scope.proto != "http":
        return
    body = await proto()
    path = scope.path
    for prefix, name, handler in _ROUTES:
        if path.startswith(prefix):
            if scope.method != "POST":
                status, headers, out = providers._json(405, {"error": "method not allowed"})
            else:
                f = state.faults.get(name)
                if f is not None and f.latency_ms:
                    await asyncio.sleep(f.latency_ms / 1000)
                status, headers, out = handler(state, path, scope.headers, body)
                state.count(name, status)
            proto.response_bytes(status, headers, out)
            return
    status, headers, out = _control(scope.method, path, scope.query_string, body)
    proto.response_bytes(status, headers, out)
