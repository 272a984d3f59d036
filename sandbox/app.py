"""The RSGI app (granian): routes a request to a provider or to the control API.

RSGI rather than ASGI because the per-request path is shorter (no scope dicts, no message
dicts) and the sandbox shares the 2 cores with the pipeline it measures.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import orjson

from sandbox import providers
from sandbox.state import PROVIDERS, Fault, State

state = State()
# order matters: SendGrid's /v3/mail/send before Mailgun's /v3/{domain}/messages
_ROUTES = (("/3/device/", "apns", providers.apns), ("/v1/projects/", "fcm", providers.fcm),
           ("/v3/mail/send", "sendgrid", providers.sendgrid),
           ("/2010-04-01/Accounts/", "twilio", providers.twilio),
           ("/v2/email/", "ses", providers.ses), ("/v3/", "mailgun", providers.mailgun),
           ("/sms/", "vonage", providers.vonage))
_j = providers.json_resp
_OK = _j(200, {"ok": True})


def _control(method: str, path: str, query: str, body: bytes) -> providers.Resp:
    if path == "/_sandbox/health":
        return _OK
    if path == "/_sandbox/reset" and method == "POST":
        state.reset()
        return _OK
    if path == "/_sandbox/faults":
        if method == "DELETE":
            state.faults.clear()
            return _OK
        if method == "POST":
            try:
                spec = orjson.loads(body)
                provider = spec.pop("provider")
                if provider not in PROVIDERS:
                    raise ValueError(f"provider must be one of {PROVIDERS}")
                state.faults[provider] = Fault.parse(spec)
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError,
                    ValueError) as e:
                return _j(400, {"error": f"bad fault spec: {e!r}"})
            return _OK
        if method == "GET":
            return _j(200, {p: {k: getattr(f, k) for k in f.__slots__}
                            for p, f in state.faults.items()})
    if path == "/_sandbox/messages" and method == "GET":
        qs = {k: v[0] for k, v in parse_qs(query).items()}
        provider = qs.get("provider") or None
        if provider is not None and provider not in PROVIDERS:
            return _j(400, {"error": f"provider must be one of {PROVIDERS}"})
        try:
            offset, limit = int(qs.get("offset", 0)), int(qs.get("limit", 100_000))
        except ValueError:
            return _j(400, {"error": "offset and limit must be integers"})
        return _j(200, state.read(provider, max(offset, 0), max(limit, 0)))
    if path == "/_sandbox/visible" and method == "GET":
        qs = {k: v[0] for k, v in parse_qs(query).items()}
        provider = qs.get("provider") or None
        if provider is not None and provider not in PROVIDERS:
            return _j(400, {"error": f"provider must be one of {PROVIDERS}"})
        return _j(200, state.visible(provider, qs.get("target_prefix", "")))
    if path == "/_sandbox/stats" and method == "GET":
        return _j(200, state.stats())
    return _j(404, {"error": f"no such control endpoint {method} {path}"})


async def _provider(name: str, handler, scope, body: bytes) -> providers.Resp:
    f = state.faults.get(name)
    if f is not None and f.latency_ms:
        await asyncio.sleep(f.latency_ms / 1000)  # other streams keep going meanwhile
    if scope.method != "POST":
        resp = _j(405, {"error": "method not allowed"})
    else:
        try:
            resp = handler(state, scope.path, scope.headers, body)
        except Exception as e:  # noqa: BLE001 (a malformed request must not kill the stream)
            resp = _j(400, {"error": f"malformed request: {e!r}"})
    state.count(name, resp[0])
    return resp


async def app(scope, proto) -> None:
    if scope.proto != "http":
        return
    body = await proto()
    path = scope.path
    if path[:10] == "/3/device/" and scope.method == "POST":  # the hot path: no fault, no await
        if "apns" not in state.faults:
            try:
                status, headers, out = providers.apns(state, path, scope.headers, body)
            except Exception as e:  # noqa: BLE001
                status, headers, out = _j(400, {"error": f"malformed request: {e!r}"})
            state.count("apns", status)
            proto.response_bytes(status, headers, out)
            return
    for prefix, name, handler in _ROUTES:
        if path.startswith(prefix):
            status, headers, out = await _provider(name, handler, scope, body)
            break
    else:
        status, headers, out = _control(scope.method, path, scope.query_string, body)
    proto.response_bytes(status, headers, out)
