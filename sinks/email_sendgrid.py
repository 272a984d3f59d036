"""SendGrid v3 mail/send through the ``sendgrid`` library: same-content emails batched.

One request carries up to 1,000 personalizations, so tasks with the same subject, body,
template and locale go out together, each personalization tagged with ``custom_args.nid``.
Errors: https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/errors
"""

from __future__ import annotations

import time
from collections import defaultdict

import orjson
from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import results as R

MAX_PERSONALIZATIONS = 1000


def make_client(cfg: Settings) -> SendGridAPIClient:
    return SendGridAPIClient(cfg.sendgrid_api_key.get_secret_value(), host=cfg.sendgrid_url)


def group(tasks: list[DeliveryTask]) -> list[list[DeliveryTask]]:
    """Tasks that can share one request: same content, at most 1,000 each."""
    by: dict[tuple, list[DeliveryTask]] = defaultdict(list)
    for t in tasks:
        by[(t.template, t.title, t.body, t.locale)].append(t)
    out = []
    for same in by.values():
        for i in range(0, len(same), MAX_PERSONALIZATIONS):
            out.append(same[i : i + MAX_PERSONALIZATIONS])
    return out


def build_request(tasks: list[DeliveryTask], cfg: Settings) -> dict:
    first = tasks[0]
    pers = []
    for t in tasks:
        p: dict = {"to": [{"email": t.address}], "custom_args": {"nid": t.notification_id}}
        if first.template and t.data:
            p["dynamic_template_data"] = t.data
        pers.append(p)
    mail: dict = {"personalizations": pers, "from": {"email": cfg.email_from}}
    if first.template:
        mail["template_id"] = first.template
    else:
        mail["subject"] = first.title or first.type
        mail["content"] = [{"type": "text/plain", "value": first.body or ""}]
    return mail


def classify_error(tasks: list[DeliveryTask], status: int, headers, body: bytes) -> list[R.SendResult]:
    try:
        msg = "; ".join(e.get("message", "") for e in orjson.loads(body).get("errors", []))
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        msg = ""
    text = f"sendgrid {status}: {msg}".strip()
    if status == 429:
        reset = headers.get("X-RateLimit-Reset") if headers else None
        after = max(0.0, float(reset) - time.time()) if reset else None
        return [R.retry(t, text, after) for t in tasks]
    if status >= 500:
        return [R.retry(t, text) for t in tasks]
    return [R.failed(t, text) for t in tasks]


def send(client: SendGridAPIClient, tasks: list[DeliveryTask], cfg: Settings) -> list[R.SendResult]:
    out: list[R.SendResult] = []
    for batch in group(tasks):
        try:
            resp = client.send(build_request(batch, cfg))
            if resp.status_code in (200, 202):
                out += [R.sent(t) for t in batch]
            else:
                out += classify_error(batch, resp.status_code, resp.headers, resp.body or b"")
        except http_errors.HTTPError as e:
            out += classify_error(batch, e.status_code, e.headers, e.body or b"")
        except OSError as e:  # connection refused, timeout
            out += [R.retry(t, f"sendgrid connection: {e}") for t in batch]
    return out
