"""User settings, version 1: the value of compacted notify.settings, keyed by user id.

Example::

    {"v": 1, "user_id": "u1",
     "channels": {"push": true, "email": true, "sms": false, "inapp": true},
     "opt_out_types": ["marketing", "social.like"],
     "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Europe/Paris"},
     "email": "ann@example.com", "phone": "+15551234567", "locale": "en"}

A channel missing from ``channels`` is on.  An opt-out names a type or a type prefix
(``marketing`` covers ``marketing.weekly``).  A user with no settings record at all gets
``UserSettings.defaults(user_id)``: every channel on, no opt-outs, no quiet hours.
A null value (tombstone) on the topic deletes the record.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from schemas.errors import ValidationFailed, decode_or_reason
from schemas.limits import (
    MAX_EMAIL_BYTES,
    MAX_LOCALE_BYTES,
    MAX_OPT_OUTS,
    MAX_TYPE_BYTES,
    MAX_TZ_BYTES,
    TYPE_RE,
    check_bytes,
    check_name,
    check_pattern,
    check_size,
    check_user_id,
    shown,
)
from schemas.request import CHANNELS

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,8}([_-][A-Za-z0-9]{1,8})*$")


class QuietHours(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    start: str  # "HH:MM" local time
    end: str  # "HH:MM"; end < start spans midnight
    tz: str  # IANA zone


class UserSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: str
    v: int = 1
    channels: dict[str, bool] = {}
    opt_out_types: list[str] = []
    quiet_hours: QuietHours | None = None
    email: str | None = None
    phone: str | None = None
    locale: str = "en"

    @staticmethod
    def defaults(user_id: str) -> UserSettings:
        return UserSettings(user_id=user_id)


_decoder = msgspec.json.Decoder(UserSettings)
_encoder = msgspec.json.Encoder()


def decode_settings(raw: bytes) -> UserSettings:
    check_size(raw)
    s = decode_or_reason(_decoder, raw)
    if s.v != 1:
        raise ValidationFailed(f"v: unsupported version {s.v} (this service reads 1)")
    check_user_id("user_id", s.user_id)
    for ch in s.channels:
        if ch not in CHANNELS:
            raise ValidationFailed(
                f"channels: unknown channel {shown(ch)} (one of {', '.join(CHANNELS)})")
    if len(s.opt_out_types) > MAX_OPT_OUTS:
        raise ValidationFailed(f"opt_out_types: {len(s.opt_out_types)} is over {MAX_OPT_OUTS}")
    for i, t in enumerate(s.opt_out_types):
        check_bytes(f"opt_out_types[{i}]", t, MAX_TYPE_BYTES)
        check_pattern(f"opt_out_types[{i}]", t, TYPE_RE, "a type or a dotted prefix")
    if s.phone is not None:
        check_pattern("phone", s.phone, _PHONE, "an E.164 number like +15551234567")
    if s.email is not None:
        check_name("email", s.email, MAX_EMAIL_BYTES)
        local, at, domain = s.email.rpartition("@")
        if not at or not local or not domain or any(c.isspace() for c in s.email):
            raise ValidationFailed(f"email: {shown(s.email)} is not an email address")
    check_bytes("locale", s.locale, MAX_LOCALE_BYTES)
    check_pattern("locale", s.locale, _LOCALE, "a language tag like 'en' or 'pt-BR'")
    if s.quiet_hours is not None:
        q = s.quiet_hours
        check_quiet_hours("quiet_hours", q.start, q.end, q.tz)
    return s


def check_quiet_hours(field: str, start: str, end: str, tz: str) -> None:
    """Quiet hours as settings and delivery tasks carry them: "HH:MM" twice and an IANA zone."""
    check_pattern(f"{field}.start", start, _HHMM, "HH:MM")
    check_pattern(f"{field}.end", end, _HHMM, "HH:MM")
    check_name(f"{field}.tz", tz, MAX_TZ_BYTES)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationFailed(f"{field}.tz: {shown(tz)} is not an IANA time zone") from None


def encode_settings(s: UserSettings) -> bytes:
    return _encoder.encode(s)
