"""Twilio Messages through the ``twilio`` library (9.x).

SMS is rate-bound by the provider (a US long code sends 1 segment/s), so SDK
overhead does not matter and requests go one by one; one task's failure never stops the
others.  The notification id rides on StatusCallback (``?nid=``) so delivery callbacks can
be matched.  Pointing the library at the sandbox: ``client.api.base_url`` (the Api domain
joins it with each resource path; checked against twilio 9.13), with edge/region cleared
so ``TWILIO_EDGE``/``TWILIO_REGION`` cannot rewrite a non-twilio.com host.
Errors: https://www.twilio.com/docs/api/errors
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import no_answer
from sinks import results as R

log = logging.getLogger(__name__)

UNSUBSCRIBED_CODES = frozenset({21610})  # the recipient replied STOP
RETRY_CODES = frozenset({20429, 21611})  # too many requests; sender queue over 10 h
MAX_BODY_CHARS = 1600  # Twilio refuses longer bodies (error 21617)
# everything else is permanent: 21211 invalid To, 21614 not a mobile number, 20003 auth…


def make_client(cfg: Settings) -> Client:
    """The library's client pointed at ``cfg.twilio_url`` (no I/O until the first send)."""
    c = Client(cfg.twilio_account_sid, cfg.twilio_auth_token.get_secret_value(),
               http_client=TwilioHttpClient(timeout=cfg.failover_timeout_s))
    host = urlsplit(cfg.twilio_url).hostname or ""
    if not host.endswith("twilio.com"):
        c.edge = c.region = None  # they would rewrite the sandbox's host name
    c.api.base_url = cfg.twilio_url.rstrip("/")
    return c


def body_of(t: DeliveryTask) -> str:
    if t.title and t.body:
        return f"{t.title}: {t.body}"
    return t.body or t.title or ""


def status_callback(t: DeliveryTask, cfg: Settings) -> str:
    """Where Twilio reports delivery, tagged with the notification id.  The base is
    ``cfg.sms_status_callback_url`` when the settings have one, else ``{twilio_url}/sms/status``
    (the sandbox; a real deployment needs its own webhook)."""
    base = getattr(cfg, "sms_status_callback_url", "") or f"{cfg.twilio_url.rstrip('/')}/sms/status"
    return f"{base}?nid={quote(t.notification_id, safe='')}"


def classify_error(t: DeliveryTask, e: TwilioRestException) -> R.SendResult:
    """A TwilioRestException -> SendResult: 21610 unsubscribed; 20429/21611/429/5xx retry;
    the rest (21211, 21614, auth…) failed."""
    text = f"twilio {e.status} {e.code}: {e.msg}"
    if e.code in UNSUBSCRIBED_CODES:
        return R.unsubscribed(t, text)
    if e.code in RETRY_CODES or e.status == 429 or e.status >= 500:
        return R.retry(t, text)
    return R.failed(t, text)


def send_one(client: Client, t: DeliveryTask, cfg: Settings) -> R.SendResult:
    if len(body_of(t)) > MAX_BODY_CHARS:
        return R.failed(t, f"twilio: body of {len(body_of(t))} characters is over "
                           f"{MAX_BODY_CHARS}")
    try:
        m = client.messages.create(to=t.address, from_=cfg.sms_from, body=body_of(t),
                                   status_callback=status_callback(t, cfg))
        return R.sent(t, m.sid)
    except TwilioRestException as e:
        return classify_error(t, e)
    except (TwilioException, OSError) as e:  # requests' connection errors/timeouts are OSError
        return no_answer.from_exception(t, "twilio", e)
    except Exception as e:  # one task's surprise never aborts the others; retries are bounded
        log.exception("twilio send failed unexpectedly")
        return R.retry(t, f"twilio unexpected: {type(e).__name__}: {e}")


def send(client: Client, tasks: list[DeliveryTask], cfg: Settings) -> list[R.SendResult]:
    """One Messages.create per task, in order (provider-rate-bound: sequential is enough)."""
    return [send_one(client, t, cfg) for t in tasks]
