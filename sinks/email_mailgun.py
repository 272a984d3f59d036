"""Mailgun ``POST /v3/{domain}/messages`` over httpx: multipart form, basic auth ``api:KEY``.

One request per task; the notification id rides as the custom variable ``v:nid``.
Success 200 ``{"id": "<...>", "message": "Queued. Thank you."}``. Error codes beyond the
HTTP status are unverified: 429/5xx retry, other 4xx fail.
"""

from __future__ import annotations

import base64

import httpx
import orjson

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import http_send, no_answer
from sinks import results as R
from sinks.push_transport import HttpReq, HttpResp


def make_client(cfg: Settings) -> httpx.Client:
    return http_send.make_client(cfg.failover_timeout_s)


def fields(t: DeliveryTask, cfg: Settings) -> list[tuple[str, str]]:
    f = [("from", cfg.email_from), ("to", t.address), ("subject", t.title or t.type),
         ("v:nid", t.notification_id)]
    if t.template:
        f += [("template", t.template), ("t:variables", orjson.dumps(t.data or {}).decode())]
    else:
        f.append(("text", t.body or ""))
    return f


def build_request(t: DeliveryTask, cfg: Settings) -> HttpReq:
    url = f"{cfg.mailgun_url.rstrip('/')}/v3/{cfg.mailgun_domain}/messages"
    # httpx encodes the multipart body without any network: (None, value) is a plain field
    req = httpx.Request("POST", url, files=[(k, (None, v)) for k, v in fields(t, cfg)])
    body = req.read()
    auth = base64.b64encode(f"api:{cfg.mailgun_api_key.get_secret_value()}".encode()).decode()
    return HttpReq(url, [("authorization", f"Basic {auth}"),
                         ("content-type", req.headers["content-type"])], body)


def classify(t: DeliveryTask, resp: HttpResp) -> R.SendResult:
    if resp.error is not None:
        return no_answer.result(t, "mailgun", resp.error)
    try:
        doc = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    if resp.status == 200:
        return R.sent(t, doc.get("id"))
    msg = str(doc.get("message") or resp.body[:200].decode(errors="replace")).strip()
    text = f"mailgun {resp.status}: {msg}"
    if resp.status == 429 or resp.status >= 500:
        return R.retry(t, text, R.parse_retry_after(resp.headers.get("retry-after")))
    if resp.status in (401, 403):
        return R.failed(t, f"{text} (credentials/account)")
    return R.failed(t, text)


def send(client: httpx.Client, tasks: list[DeliveryTask], cfg: Settings) -> list[R.SendResult]:
    return http_send.send_each(client, tasks, "mailgun", lambda t: build_request(t, cfg),
                               classify)
