"""Wire contracts: frozen, versioned types and validation that names the field and the problem.

No I/O here; every flow, sink, the gateway and the sandbox tests import from this package.
"""

from schemas.device import Device
from schemas.errors import ValidationFailed
from schemas.receipt import Outcome, Receipt
from schemas.request import CHANNELS, PRIORITIES, NotificationRequest
from schemas.settings import QuietHours, UserSettings

__all__ = [
    "CHANNELS",
    "PRIORITIES",
    "Device",
    "NotificationRequest",
    "Outcome",
    "QuietHours",
    "Receipt",
    "UserSettings",
    "ValidationFailed",
]
