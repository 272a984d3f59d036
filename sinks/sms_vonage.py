"""Vonage SMS API ``POST /sms/json`` over httpx (form-encoded, api_key/api_secret in the body).

Always HTTP 200: the outcome is each ``messages[].status`` (+ ``error-text``). A long text is
split by Vonage into several messages; the send counts as sent only if all are status 0.
The notification id rides as ``client-ref``.  from each provider's API documentation:
0 ok; 1 throttled and 5 internal: retry; 2/3/6/7/9/12/15 permanent; 4/8 credentials/account.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import orjson

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import http_send, no_answer
from sinks import results as R
from sinks.push_transport import HttpReq, HttpResp

RETRY_STATUS = {"1", "5"}
ACCOUNT_STATUS = {"4", "8"}  # bad credentials, partner account barred: alert operators
FAILED_STATUS = {"2", "3", "6", "7", "9", "12", "15"}  # and anything else unknown


def make_client(cfg: Settings) -> httpx.Client:
    return http_send.make_client(cfg.failover_timeout_s)


def body_of(t: DeliveryTask) -> str:
    if t.title and t.body:
        return f"{t.title}: {t.body}"
    return t.body or t.title or ""


def build_request(t: DeliveryTask, cfg: Settings) -> HttpReq:
    form = {"api_key": cfg.vonage_api_key, "api_secret": cfg.vonage_api_secret.get_secret_value(),
            "from": cfg.sms_from.lstrip("+"), "to": t.address.lstrip("+"),  # digits, no +
            "text": body_of(t), "client-ref": t.notification_id[:100]}
    return HttpReq(f"{cfg.vonage_url.rstrip('/')}/sms/json",
                   [("content-type", "application/x-www-form-urlencoded")],
                   urlencode(form).encode())


def classify(t: DeliveryTask, resp: HttpResp) -> R.SendResult:
    if resp.error is not None:
        return no_answer.result(t, "vonage", resp.error)
    after = R.parse_retry_after(resp.headers.get("retry-after"))
    if resp.status != 200:  # not the API's answer: a gateway or outage in front of it
        text = f"vonage http {resp.status}"
        if resp.status == 429 or resp.status >= 500:
            return R.retry(t, text, after)
        return R.failed(t, text)
    try:
        msgs = orjson.loads(resp.body)["messages"]
        statuses = [(str(m["status"]), m) for m in msgs]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return R.failed(t, "vonage: unreadable response")
    if not statuses:
        return R.failed(t, "vonage: no messages in response")
    bad = [(s, m) for s, m in statuses if s != "0"]
    if not bad:
        return R.sent(t, ",".join(str(m.get("message-id", "")) for _, m in statuses))
    code, m = bad[0]
    text = f"vonage status {code}: {m.get('error-text', '')}".strip()
    if code in RETRY_STATUS:
        return R.retry(t, text, after)
    if code in ACCOUNT_STATUS:
        return R.failed(t, f"{text} (credentials/account)")
    return R.failed(t, text)


def send(client: httpx.Client, tasks: list[DeliveryTask], cfg: Settings) -> list[R.SendResult]:
    return http_send.send_each(client, tasks, "vonage", lambda t: build_request(t, cfg),
                               classify)
