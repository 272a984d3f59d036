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
from schemas.request import CHANNELS

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")


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
    s = decode_or_reason(_decoder, raw)
    if s.v != 1:
        raise ValidationFailed(f"v: unsupported version {s.v} (this service reads 1)")
    if not s.user_id:
        raise ValidationFailed("user_id: must not be empty")
    for ch in s.channels:
        if ch not in CHANNELS:
            raise ValidationFailed(f"channels: unknown channel {ch!r} (one of {', '.join(CHANNELS)})")
    if s.phone is not None and not _PHONE.match(s.phone):
        raise ValidationFailed(f"phone: {s.phone!r} is not an E.164 number like +15551234567")
    if s.email is not None and "@" not in s.email:
        raise ValidationFailed(f"email: {s.email!r} is not an email address")
    q = s.quiet_hours
    if q is not None:
        for f in ("start", "end"):
            if not _HHMM.match(getattr(q, f)):
                raise ValidationFailed(f"quiet_hours.{f}: {getattr(q, f)!r} is not HH:MM")
        try:
            ZoneInfo(q.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationFailed(f"quiet_hours.tz: {q.tz!r} is not an IANA time zone") from None
    return s


def encode_settings(s: UserSettings) -> bytes:
    return _encoder.encode(s)
