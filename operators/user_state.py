"""The joined per-user state: settings and active devices, kept compact.

One ``UserState`` per source partition holds every user of that partition.  Settings are
stored as a small ``Prefs`` struct (1M users ~150 MiB as tuples vs ~350 MiB as dicts, see
DESIGN.md "Facts"), devices as tuples of ``(token_id, platform, token)`` per user.

Snapshots are the expensive part of recovery, and settings change far less often than
requests arrive, so the pickled form is cached and rebuilt only after a change.
"""

from __future__ import annotations

import pickle

import msgspec

from schemas.device import Device
from schemas.request import CHANNELS
from schemas.settings import UserSettings

_BIT = {ch: 1 << i for i, ch in enumerate(CHANNELS)}


class Prefs(msgspec.Struct, frozen=True, array_like=True, gc=False):
    off: int = 0  # bitmask of channels turned off
    opt_outs: tuple[str, ...] = ()
    quiet: tuple[str, str, str] | None = None  # (start, end, tz)
    email: str | None = None
    phone: str | None = None
    locale: str = "en"

    def channel_on(self, channel: str) -> bool:
        return not (self.off & _BIT[channel])

    def opted_out(self, type_: str) -> str | None:
        """The opt-out entry that covers ``type_`` (exact or dotted prefix), if any."""
        for o in self.opt_outs:
            if type_ == o or type_.startswith(o + "."):
                return o
        return None


DEFAULT_PREFS = Prefs()

# (token_id, platform, token)
DeviceRow = tuple[str, str, str]


def prefs_from_settings(s: UserSettings) -> Prefs:
    off = 0
    for ch, on in s.channels.items():
        if not on:
            off |= _BIT[ch]
    q = s.quiet_hours
    return Prefs(
        off=off,
        opt_outs=tuple(s.opt_out_types),
        quiet=(q.start, q.end, q.tz) if q else None,
        email=s.email,
        phone=s.phone,
        locale=s.locale,
    )


class UserState:
    """Settings and devices of the users of one partition."""

    __slots__ = ("prefs", "devices", "_blob")

    def __init__(self) -> None:
        self.prefs: dict[str, Prefs] = {}
        self.devices: dict[str, tuple[DeviceRow, ...]] = {}
        self._blob: bytes | None = None

    def get_prefs(self, user_id: str) -> Prefs:
        return self.prefs.get(user_id, DEFAULT_PREFS)

    def get_devices(self, user_id: str) -> tuple[DeviceRow, ...]:
        return self.devices.get(user_id, ())

    def put_settings(self, s: UserSettings) -> None:
        self.prefs[s.user_id] = prefs_from_settings(s)
        self._blob = None

    def delete_settings(self, user_id: str) -> None:
        if self.prefs.pop(user_id, None) is not None:
            self._blob = None

    def put_device(self, d: Device) -> None:
        """Add, replace or (inactive) retire one device of a user."""
        rows = tuple(r for r in self.devices.get(d.user_id, ()) if r[0] != d.token_id)
        if d.active:
            rows = rows + ((d.token_id, d.platform, d.token),)
        if rows:
            self.devices[d.user_id] = rows
        else:
            self.devices.pop(d.user_id, None)
        self._blob = None

    def delete_device(self, user_id: str, token_id: str) -> None:
        rows = tuple(r for r in self.devices.get(user_id, ()) if r[0] != token_id)
        if rows:
            self.devices[user_id] = rows
        else:
            self.devices.pop(user_id, None)
        self._blob = None

    def snapshot(self) -> bytes:
        if self._blob is None:
            enc = msgspec.msgpack.encode
            self._blob = pickle.dumps((enc(self.prefs), self.devices), protocol=5)
        return self._blob

    @classmethod
    def restore(cls, blob: bytes) -> UserState:
        st = cls()
        prefs_raw, st.devices = pickle.loads(blob)
        st.prefs = msgspec.msgpack.decode(prefs_raw, type=dict[str, Prefs])
        st._blob = blob
        return st
