"""Twilio Messages through the ``twilio`` library.

SMS is rate-bound by the provider (a US long code sends 1 segment/s), so requests go one
by one; one failure never stops the others.  The notification id rides on StatusCallback
(``?nid=``) so delivery callbacks can be matched.
Errors: https://www.twilio.com/docs/api/errors
"""

from __future__ import annotations

from urllib.parse import quote

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from notiflow.config import Settings
from schemas.task import DeliveryTask
from sinks import results as R

FAILED_CODES = {21211, 21614, 21408, 21602, 21612}
UNSUBSCRIBED_CODES = {21610}
RETRY_CODES = {20429, 21611}


def make_client(cfg: Settings) -> Client:
    c = Client(cfg.twilio_account_sid, cfg.twilio_auth_token.get_secret_value())
    c.api.base_url = cfg.twilio_url  # the sandbox locally; api.twilio.com by default
    return c


def body_of(t: DeliveryTask) -> str:
    if t.title and t.body:
        return f"{t.title}: {t.body}"
    return t.body or t.title or ""


def classify_error(t: DeliveryTask, e: TwilioRestException) -> R.SendResult:
    text = f"twilio {e.status} {e.code}: {e.msg}"
    if e.code in UNSUBSCRIBED_CODES:
        return R.unsubscribed(t, text)
    if e.code in RETRY_CODES or e.status == 429 or e.status >= 500:
        return R.retry(t, text)
    return R.failed(t, text)


def send(client: Client, tasks: list[DeliveryTask], cfg: Settings) -> list[R.SendResult]:
    out: list[R.SendResult] = []
    callback = f"{cfg.twilio_url}/sms/status"
    for t in tasks:
        try:
            m = client.messages.create(to=t.address, from_=cfg.sms_from, body=body_of(t),
                                       status_callback=f"{callback}?nid={quote(t.notification_id)}")
            out.append(R.sent(t, m.sid))
        except TwilioRestException as e:
            out.append(classify_error(t, e))
        except (TwilioException, OSError) as e:  # connection errors, timeouts
            out.append(R.retry(t, f"twilio connection: {e}"))
    return out
