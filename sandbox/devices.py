"""What people would see: each device's notification list, folded from accepted messages.

A device (provider, target) shows notifications keyed by their collapse identity (APNs
apns-collapse-id, Android's notification tag): a new one with the same identity replaces
the old, one without identity is added beside the others.  Two figures follow:

- transport duplicates: accepted messages whose (target, notification id) the provider had
  already accepted (what crossed the wire twice);
- visible duplicates: notifications shown on a device beyond the first with the same
  notification id (what a person would see twice).

Folding is incremental and runs only when someone asks (``State.visible``), so recording
stays one tuple append on the per-request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

_MISSING = object()


@dataclass(slots=True)
class _Device:
    shown: dict[object, str | None] = field(default_factory=dict)  # identity -> nid
    nids: dict[str, int] = field(default_factory=dict)  # nid -> how many shown
    visible: int = 0  # visible duplicates
    transport: int = 0  # transport duplicates


@dataclass(slots=True)
class Figures:
    devices: int = 0
    shown: int = 0
    visible_duplicates: int = 0
    transport_duplicates: int = 0

    def add(self, other: Figures) -> None:
        self.devices += other.devices
        self.shown += other.shown
        self.visible_duplicates += other.visible_duplicates
        self.transport_duplicates += other.transport_duplicates


class Devices:
    """One provider's devices, fed accepted messages in arrival order."""

    def __init__(self) -> None:
        self._devices: dict[str, _Device] = {}
        self._accepted: set[tuple[str, str]] = set()
        self._anon = count()  # keys of notifications without identity: never equal a str
        self.figures = Figures()

    def add(self, target: str, nid: str | None, identity: str | None) -> None:
        f = self.figures
        dev = self._devices.get(target)
        if dev is None:
            dev = self._devices[target] = _Device()
            f.devices += 1
        if nid is not None:
            if (target, nid) in self._accepted:
                f.transport_duplicates += 1
                dev.transport += 1
            else:
                self._accepted.add((target, nid))
        key: object = identity if identity is not None else next(self._anon)
        old = dev.shown.pop(key, _MISSING)
        if old is not _MISSING:  # replaced in place: one fewer shown
            f.shown -= 1
            if old is not None:
                left = dev.nids[old] - 1
                dev.nids[old] = left
                if left >= 1:
                    f.visible_duplicates -= 1
                    dev.visible -= 1
        dev.shown[key] = nid
        f.shown += 1
        if nid is not None:
            n = dev.nids.get(nid, 0) + 1
            dev.nids[nid] = n
            if n >= 2:
                f.visible_duplicates += 1
                dev.visible += 1

    def figures_of(self, target_prefix: str) -> Figures:
        """The figures of the devices whose target starts with ``target_prefix`` (a test's
        own devices on a shared sandbox); one pass over the devices."""
        out = Figures()
        for target, dev in self._devices.items():
            if target.startswith(target_prefix):
                out.devices += 1
                out.shown += len(dev.shown)
                out.visible_duplicates += dev.visible
                out.transport_duplicates += dev.transport
        return out

    def shown(self, target: str) -> list[str | None]:
        """The notification ids a device shows, oldest first."""
        dev = self._devices.get(target)
        return list(dev.shown.values()) if dev is not None else []
