"""The joined per-user state: settings and active devices, kept compact.

One ``UserState`` per source partition holds every user of that partition.  Each user is
ONE dict entry whose value is the msgpack encoding of a ``UserRow`` (settings + devices):
~340 B a user against ~800 B as Python objects (measured with 1M users, see
BENCHMARKS.md), decoded on look-up for ~1 µs.  The snapshot is the msgpack of the dict,
one C call, so no cached copy has to be kept between epochs.
"""

from __future__ import annotations

import msgspec

from schemas.device import Device
from schemas.request import CHANNELS
from schemas.settings import UserSettings

_BIT = {ch: 1 << i for i, ch in enumerate(CHANNELS)}

# (token_id, platform, token)
DeviceRow = tuple[str, str, str]


class UserRow(msgspec.Struct, frozen=True, array_like=True, gc=False):
    off: int = 0  # bitmask of channels turned off
    opt_outs: tuple[str, ...] = ()
    quiet: tuple[str, str, str] | None = None  # (start, end, tz)
    email: str | None = None
    phone: str | None = None
    locale: str = "en"
    devices: tuple[DeviceRow, ...] = ()
    has_settings: bool = False

    def channel_on(self, channel: str) -> bool:
        return not (self.off & _BIT[channel])

    def opted_out(self, type_: str) -> str | None:
        """The opt-out entry that covers ``type_`` (exact or dotted prefix), if any."""
        for o in self.opt_outs:
            if type_ == o or type_.startswith(o + "."):
                return o
        return None


DEFAULT_ROW = UserRow()
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(UserRow)
_snap_dec = msgspec.msgpack.Decoder(dict[str, bytes])


def row_with_settings(row: UserRow, s: UserSettings) -> UserRow:
    off = 0
    for ch, on in s.channels.items():
        if not on:
            off |= _BIT[ch]
    q = s.quiet_hours
    return UserRow(off=off, opt_outs=tuple(s.opt_out_types),
                   quiet=(q.start, q.end, q.tz) if q else None, email=s.email, phone=s.phone,
                   locale=s.locale, devices=row.devices, has_settings=True)


MAX_DEVICES = 20  # NOTIFLOW_MAX_DEVICES_PER_USER's default


class UserState:
    """Settings and devices of the users of one partition.

    A user keeps at most ``max_devices`` active devices.  Without a cap one user's loop of
    registrations (a few thousand, from their own token) made every later update of their
    row cost more, all of it lane CPU shared by every user: each update re-encodes the
    whole row, so the cap also bounds what one update costs."""

    __slots__ = ("rows", "max_devices")

    def __init__(self, rows: dict[str, bytes] | None = None,
                 max_devices: int = MAX_DEVICES) -> None:
        self.rows: dict[str, bytes] = rows if rows is not None else {}
        self.max_devices = max_devices

    def get(self, user_id: str) -> UserRow:
        raw = self.rows.get(user_id)
        return DEFAULT_ROW if raw is None else _dec.decode(raw)

    def _put(self, user_id: str, row: UserRow) -> None:
        if row.has_settings or row.devices:
            self.rows[user_id] = _enc.encode(row)
        else:
            self.rows.pop(user_id, None)

    def put_settings(self, s: UserSettings) -> None:
        self._put(s.user_id, row_with_settings(self.get(s.user_id), s))

    def delete_settings(self, user_id: str) -> None:
        row = self.get(user_id)
        self._put(user_id, UserRow(devices=row.devices))

    def put_device(self, d: Device) -> str | None:
        """Add, replace or (inactive) retire one device of a user; a device updated moves to
        the end (newest).  A new one over the cap replaces the user's least recently
        registered device, whose token_id is returned.  Why replace rather than refuse:
        apps that are reinstalled or whose tokens rotate leave stale devices nobody deletes;
        refusing the newest would cut the user's current phone off for good and keep the
        dead tokens, while the newest registration is the one most likely to be live (and
        whoever holds the user's token could delete their devices anyway)."""
        row = self.get(d.user_id)
        devs = tuple(r for r in row.devices if r[0] != d.token_id)
        evicted = None
        if d.active:
            if len(devs) >= self.max_devices:
                evicted = devs[0][0]
                devs = devs[len(devs) - self.max_devices + 1:]
            devs += ((d.token_id, d.platform, d.token),)
        self._put(d.user_id, msgspec.structs.replace(row, devices=devs))
        return evicted

    def delete_device(self, user_id: str, token_id: str) -> None:
        row = self.get(user_id)
        devs = tuple(r for r in row.devices if r[0] != token_id)
        self._put(user_id, msgspec.structs.replace(row, devices=devs))

    def __contains__(self, user_id: str) -> bool:
        return user_id in self.rows

    def snapshot(self) -> bytes:
        return _enc.encode(self.rows)

    @classmethod
    def restore(cls, blob: bytes, max_devices: int = MAX_DEVICES) -> UserState:
        return cls(_snap_dec.decode(blob), max_devices)
