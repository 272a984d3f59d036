"""A send that got no HTTP answer: could the provider have taken it?

Email and SMS providers offer no idempotency key, so a request that may have reached a
provider must not be sent again through another one (that is a second email or SMS for
sure when the first provider did take it).  The rule: no connection made (refused, a
connect timeout, DNS, waiting for a pooled connection) means nothing was sent; any other
error without an answer (a read timeout, a reset or a protocol error after the request
went out) means the provider may have taken it.  The result's reason says which, and the
reason is what a retried task carries in ``errors``, so the failover can keep such a task
with its provider (sinks/failover.py).
"""

from __future__ import annotations

from schemas.task import DeliveryTask
from sinks import results as R

# in the reason (a retried task's error line): keep the task with this provider
MAYBE_TAKEN = "connection: no answer, may have been taken"
NOT_CONNECTED = "connection: never made"
# exception names (httpx, requests/urllib3, urllib, the socket layer) raised before a
# request was written; the error text is "ExcName: message" (requests' ConnectionError
# names the NewConnectionError it wraps in its message)
_NEVER_SENT = ("ConnectError", "ConnectTimeout", "PoolTimeout", "NewConnectionError",
               "ConnectionRefusedError", "URLError", "NameResolutionError", "gaierror")


def never_sent(error: str) -> bool:
    """True when ``error`` ("ExcName: message") says the request was never written."""
    return any(n in error for n in _NEVER_SENT)


def result(t: DeliveryTask, provider: str, error: str) -> R.SendResult:
    """The ``retry`` result of a send without an HTTP answer (``error``: "ExcName: ...")."""
    kind = NOT_CONNECTED if never_sent(error) else MAYBE_TAKEN
    return R.retry(t, f"{provider} {kind}: {error}")


def from_exception(t: DeliveryTask, provider: str, e: BaseException) -> R.SendResult:
    return result(t, provider, f"{type(e).__name__}: {e}")


def maybe_taken(reason: str) -> bool:
    """Whether a result's reason (or a retried task's latest error line) says the provider
    may have taken the send."""
    return MAYBE_TAKEN in reason
