"""The limits every wire contract shares: id formats, string lengths, depth and range of data.

One module owns them so that the gateway (422 naming the field) and the flows (a rejected
record with the same reason) refuse exactly the same input: both call the decoders in
schemas/, which call the checks here.  Patterns are anchored ``^...$`` so they also work as
JSON Schema / pydantic patterns (where ``$`` is the end of the text), and are always applied
here with ``fullmatch``: Python's ``re.match`` with ``$`` accepts a trailing newline, so
``"marketing.weekly\\n"`` would pass and then match no opt-out.
"""

from __future__ import annotations

import re
from typing import Any

from schemas.errors import ValidationFailed

# what a user id may look like everywhere: recipients, settings, devices, the people's API
USER_ID_PATTERN = r"^[A-Za-z0-9._@+-]{1,128}$"
USER_ID_RE = re.compile(USER_ID_PATTERN)
# a device's name within its user (the Kafka key is "user:token_id")
TOKEN_ID_PATTERN = r"^[A-Za-z0-9._@:+-]{1,128}$"
TOKEN_ID_RE = re.compile(TOKEN_ID_PATTERN)
# a provider's device token: APNs hex, FCM [A-Za-z0-9_:-]; never '/', '?', '%' or spaces,
# because APNs puts it in the request path
DEVICE_TOKEN_PATTERN = r"^[A-Za-z0-9._:+=~-]{1,1024}$"
DEVICE_TOKEN_RE = re.compile(DEVICE_TOKEN_PATTERN)
# a notification type: dotted lower-case names ("social.like"); opt-outs name one or a prefix
TYPE_PATTERN = r"^[a-z0-9_]+(\.[a-z0-9_]+)*$"
TYPE_RE = re.compile(TYPE_PATTERN)
# a request's producer namespace (schemas/identity.py): a name, or the gateway's "api:<hex>"
PRODUCER_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
PRODUCER_RE = re.compile(PRODUCER_PATTERN)

MAX_ID_BYTES = 200  # notification ids (escalations append "~sms": sinks/channels.py hashes)
MAX_TYPE_BYTES = 128
MAX_TITLE_BYTES = 1024
MAX_BODY_BYTES = 8192
MAX_TEMPLATE_BYTES = 256
MAX_COLLAPSE_KEY_BYTES = 64  # the APNs limit
MAX_DEDUP_PART_BYTES = 256  # dedup.actor, dedup.object
MAX_AUDIENCE_ID_BYTES = 200  # a topic name or a followed user id
MAX_DATA_DEPTH = 16  # containers: {"a": {"b": [1]}} is 3 deep
MAX_DATA_KEY_BYTES = 256
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what every JSON encoder and ClickHouse take
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: datetime's last day
# settings, devices, subscriptions and presence records (requests: max_request_bytes)
MAX_STATE_RECORD_BYTES = 16 * 1024
MAX_OPT_OUTS = 100
MAX_EMAIL_BYTES = 254  # RFC 5321 path limit
MAX_TZ_BYTES = 64
MAX_LOCALE_BYTES = 35  # BCP 47's longest registered tag
MAX_REASON_CHARS = 500  # a reason on notify.rejected or in a receipt
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# the hot path's one C call for an id: printable ASCII (bytes == characters), 1..200 long;
# anything else takes the detailed checks, which name the problem
PLAIN_ID_RE = re.compile(r"[\x20-\x7e]{1,200}")


def shown(value: object, n: int = 60) -> str:
    """``repr(value)``, cut to about ``n`` characters: reasons quote input, never all of it."""
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def bounded(text: str, n: int = MAX_REASON_CHARS) -> str:
    """A reason cut to ``n`` characters (a rejected record must stay small)."""
    return text if len(text) <= n else text[: n - 3] + "..."


def check_size(raw: bytes, max_bytes: int = MAX_STATE_RECORD_BYTES) -> None:
    """A whole record over ``max_bytes`` is refused before it is parsed."""
    if len(raw) > max_bytes:
        raise ValidationFailed(f"payload: {len(raw)} bytes is over the {max_bytes}-byte limit")


def check_bytes(field: str, value: str | None, max_bytes: int) -> None:
    if value is not None and len(value) * 4 > max_bytes and len(value.encode()) > max_bytes:
        raise ValidationFailed(f"{field}: {len(value.encode())} bytes is over the "
                               f"{max_bytes}-byte limit")


def check_text(field: str, value: str | None, max_bytes: int) -> None:
    """At most ``max_bytes`` with no control characters, empty allowed: for values that end
    up in provider HTTP headers (collapse_key is APNs' ``apns-collapse-id``: a CR/LF would
    add headers to a request signed with our provider token) and in dedup keys."""
    if value is None:
        return
    check_bytes(field, value, max_bytes)
    if CONTROL_RE.search(value):
        raise ValidationFailed(f"{field}: {shown(value)} contains control characters")


def check_name(field: str, value: str, max_bytes: int) -> None:
    """A non-empty identifier of at most ``max_bytes`` with no control characters (ids go
    into Redis keys, log lines and newline-separated live feeds)."""
    if not value:
        raise ValidationFailed(f"{field}: must not be empty")
    check_text(field, value, max_bytes)


def check_pattern(field: str, value: str, rx: re.Pattern[str], what: str) -> None:
    if not rx.fullmatch(value):
        raise ValidationFailed(f"{field}: {shown(value)} is not {what} "
                               f"(pattern {rx.pattern})")


def check_user_id(field: str, value: str) -> None:
    if not value:
        raise ValidationFailed(f"{field}: must not be empty")
    check_pattern(field, value, USER_ID_RE, "a user id")


def split_user_key(key: bytes, sep: str, shape: str) -> tuple[str, str]:
    """(user id, the rest) of a compacted topic's key ``user<sep>rest`` (a tombstone has
    nothing else); ValidationFailed naming ``shape`` when it is not one."""
    try:
        text = key.decode()
    except UnicodeDecodeError:
        raise ValidationFailed("key: not UTF-8") from None
    user, found, rest = text.partition(sep)
    if not found:
        raise ValidationFailed(f"key: must be '{shape}'")
    check_user_id("key: user_id", user)
    return user, rest


def check_epoch_ms(field: str, value: int | None) -> None:
    """Epoch milliseconds in (0, year 9999]: later ones cannot become a datetime (timers)."""
    if value is None:
        return
    if value <= 0:
        raise ValidationFailed(f"{field}: must be epoch milliseconds > 0")
    if value > MAX_EPOCH_MS:
        raise ValidationFailed(f"{field}: must be epoch milliseconds before the year 10000")


def _data_ok(v: Any, depth: int) -> bool:
    """``check_data``'s question without building a path: the hot path (every request).
    Recursion stops at ``MAX_DATA_DEPTH`` + 1, whatever the input's depth."""
    if isinstance(v, dict):
        if depth > MAX_DATA_DEPTH:
            return False
        for k, x in v.items():
            if type(k) is not str or (len(k) * 4 > MAX_DATA_KEY_BYTES
                                      and len(k.encode()) > MAX_DATA_KEY_BYTES):
                return False
            if (type(x) is dict or type(x) is list or type(x) is int) \
                    and not _data_ok(x, depth + 1):
                return False
        return True
    if isinstance(v, list | tuple):
        if depth > MAX_DATA_DEPTH:
            return False
        return all(_data_ok(x, depth + 1) for x in v
                   if type(x) is dict or type(x) is list or type(x) is int)
    if isinstance(v, int) and not isinstance(v, bool):
        return INT64_MIN <= v <= INT64_MAX
    return True


def check_data(field: str, data: Any) -> None:
    """At most ``MAX_DATA_DEPTH`` containers deep, integers in int64, keys of bounded size:
    what every encoder downstream (orjson in the sinks, Redis's cjson, ClickHouse) takes."""
    if _data_ok(data, 1):
        return
    stack: list[tuple[Any, int, str]] = [(data, 1, field)]
    while stack:
        v, depth, path = stack.pop()
        if isinstance(v, dict):
            if depth > MAX_DATA_DEPTH:
                raise ValidationFailed(f"{path}: nested over {MAX_DATA_DEPTH} levels deep")
            for k, x in v.items():
                if not isinstance(k, str):
                    raise ValidationFailed(f"{path}: keys must be strings")
                check_bytes(f"{path}: a key", k, MAX_DATA_KEY_BYTES)
                stack.append((x, depth + 1, f"{path}.{k[:40]}"))
        elif isinstance(v, list | tuple):
            if depth > MAX_DATA_DEPTH:
                raise ValidationFailed(f"{path}: nested over {MAX_DATA_DEPTH} levels deep")
            stack.extend((x, depth + 1, f"{path}[{i}]") for i, x in enumerate(v))
        elif isinstance(v, int) and not isinstance(v, bool) and not INT64_MIN <= v <= INT64_MAX:
            raise ValidationFailed(f"{path}: integer out of the 64-bit range")
