"""Patterns (and limits) the contracts share, in one place: the gateway (422) and the flow
(rejected) refuse the same things.

Validate with ``fullmatch``: ``re.match`` with ``$`` lets a trailing newline through
(``"ipad\\n"``, ``"marketing.weekly\\n"``).  The patterns keep their ``^...$`` anchors for
the places that search instead (OpenAPI / JSON Schema, FastAPI's ``pattern=``).
"""

from __future__ import annotations

import re

# a user id anywhere: recipients, the people's API path, a user token's subject
USER_ID_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
# a notification type: dotted lower-case names like "social.like"
TYPE_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
# a device's token id (the name an app gives one of its user's devices)
TOKEN_ID_RE = re.compile(r"^[A-Za-z0-9._@:+-]{1,128}$")
