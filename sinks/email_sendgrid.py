"""SendGrid v3 mail/send through the ``sendgrid`` library: same-content emails batched.

One request carries up to 1,000 personalizations (same-template emails batched),
so tasks with the same template (or the same subject and body) and locale go out
together, each personalization tagged with ``custom_args.nid`` so events map back to the
notification.  A request's answer applies to all of its personalizations.
Errors: https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/errors
"""

from __future__ import annotations

import http.client
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import no_answer
from sinks import results as R

log = logging.getLogger(__name__)

MAX_PERSONALIZATIONS = 1000


def make_client(cfg: Settings) -> SendGridAPIClient:
    """The library's client pointed at ``cfg.sendgrid_url``.  Opens nothing: the library's
    urllib opener connects per request, so building it in a sink's setup is cheap."""
    c = SendGridAPIClient(cfg.sendgrid_api_key.get_secret_value(), host=cfg.sendgrid_url)
    c.client.timeout = cfg.failover_timeout_s  # python_http_client passes it to each request
    return c


def group_key(t: DeliveryTask) -> tuple:
    """Tasks with equal keys can share one mail/send request."""
    if t.template:
        return ("template", t.template, t.locale)
    return ("content", t.title or t.type, t.body or "", t.locale)


def _groups(tasks: list[DeliveryTask]) -> list[list[int]]:
    by: dict[tuple, list[int]] = defaultdict(list)
    for i, t in enumerate(tasks):
        by[group_key(t)].append(i)
    return [same[i : i + MAX_PERSONALIZATIONS]
            for same in by.values() for i in range(0, len(same), MAX_PERSONALIZATIONS)]


def group(tasks: list[DeliveryTask]) -> list[list[DeliveryTask]]:
    """Tasks that can share one request: same content, at most 1,000 each."""
    return [[tasks[i] for i in g] for g in _groups(tasks)]


def _personalization(t: DeliveryTask, template: bool) -> dict:
    p: dict[str, Any] = {"to": [{"email": t.address}], "custom_args": {"nid": t.notification_id}}
    if template:
        p["dynamic_template_data"] = {"locale": t.locale, **(t.data or {})}
    elif t.data:
        # legacy substitutions: string values only, tags written {{key}} in the content
        subs = {f"{{{{{k}}}}}": v if isinstance(v, str) else orjson.dumps(v).decode()
                for k, v in t.data.items()}
        p["substitutions"] = subs
    return p


def build_request(tasks: list[DeliveryTask], cfg: Settings) -> dict:
    """The mail/send body for one group (pure): one personalization per task."""
    first = tasks[0]
    template = bool(first.template)
    mail: dict[str, Any] = {"personalizations": [_personalization(t, template) for t in tasks],
                            "from": {"email": cfg.email_from}}
    if template:
        mail["template_id"] = first.template
    else:
        mail["subject"] = first.title or first.type
        mail["content"] = [{"type": "text/plain", "value": first.body or ""}]
    return mail


def _header(headers: Any, name: str) -> str | None:
    """A header from a dict or an http.client.HTTPMessage, whatever its case."""
    if not headers:
        return None
    v = headers.get(name)
    if v is None:
        v = headers.get(name.lower())
    return v


def classify_error(tasks: list[DeliveryTask], status: int, headers: Any, body: bytes | None,
                   now: Callable[[], float] = time.time) -> list[R.SendResult]:
    """A non-2xx answer -> one result per personalization: 429 retry after
    X-RateLimit-Reset, 408/5xx retry, other 4xx (400/401/403/413) failed."""
    try:
        msg = "; ".join(str(e.get("message", "")) for e in orjson.loads(body or b"")["errors"])
    except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError):
        msg = ""
    text = f"sendgrid {status}: {msg}".strip()
    if status == 429:
        after = R.parse_retry_after(_header(headers, "Retry-After"))
        reset = _header(headers, "X-RateLimit-Reset")
        if reset:
            try:
                after = max(0.0, float(reset) - now())
            except ValueError:
                pass
        return [R.retry(t, text, after) for t in tasks]
    if status >= 500 or status == 408:
        after = R.parse_retry_after(_header(headers, "Retry-After"))
        return [R.retry(t, text, after) for t in tasks]
    return [R.failed(t, text) for t in tasks]


def send(client: SendGridAPIClient, tasks: list[DeliveryTask], cfg: Settings) -> list[R.SendResult]:
    """One mail/send per group; a group's failure never touches another group.  Results
    come back in the order of ``tasks``."""
    out: list = [None] * len(tasks)
    ok: list[int] = []
    for i, t in enumerate(tasks):  # a task whose personalization cannot be built fails alone
        try:
            _personalization(t, bool(t.template))
            ok.append(i)
        except Exception as e:
            out[i] = R.payload_failed(t, "sendgrid", e)
    sendable = [tasks[i] for i in ok]
    for idx in _groups(sendable):
        batch = [sendable[i] for i in idx]
        for i, r in zip(idx, send_group(client, batch, cfg), strict=True):
            out[ok[i]] = r
    return out


def send_group(client: SendGridAPIClient, batch: list[DeliveryTask],
               cfg: Settings) -> list[R.SendResult]:
    """One mail/send request for tasks of one group (at most 1,000)."""
    try:
        resp = client.send(build_request(batch, cfg))
    except http_errors.HTTPError as e:  # the library raises for every status >= 400
        return classify_error(batch, e.status_code, e.headers, e.body)
    except (OSError, http.client.HTTPException) as e:  # refused, reset, timeout
        return [no_answer.from_exception(t, "sendgrid", e) for t in batch]
    except Exception as e:  # never let one group sink the batch; retries are bounded
        log.exception("sendgrid send failed unexpectedly (n=%d)", len(batch))
        return [R.retry(t, f"sendgrid unexpected: {type(e).__name__}: {e}") for t in batch]
    if 200 <= resp.status_code < 300:
        ref = _header(resp.headers, "X-Message-Id")
        return [R.sent(t, ref) for t in batch]
    return classify_error(batch, resp.status_code, resp.headers, resp.body)
