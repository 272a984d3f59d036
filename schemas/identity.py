"""One identity for "this notification, for this person": the dedup key and the sent-marker.

Both keys come from ``identity`` and the same parts, so they cannot disagree: the marker's
parts are the dedup key's parts plus the request id, the channel and the target.  Whatever
dedup keeps apart (another event, another type, another producer) the markers keep apart
too, and a replay of the same request finds its own marker.

- **Namespaced by the producer.**  Ids and dedup parts are chosen by producers, so two
  producers reusing ``n-1`` must not collide.  The gateway sets ``producer`` from the
  authenticated API key (``gateway_producer``); producers writing to Kafka set it
  themselves ("" is the shared namespace).
- **Unambiguous.**  The text hashed is a header of each part's length followed by the
  parts, so ``("a|b", "c")`` and ``("a", "b|c")`` differ whatever characters ids hold.
  The header also says which kind of key it is and how many parts follow, so a dedup key
  never equals a marker.
- **Short.**  A 16-byte blake2b digest: Redis holds a marker per send for 48 h, and
  2^-64 odds of any collision among 10^10 keys are far below a lost notification's.  The
  dedup state keeps 8 of those bytes as an int (operators/dedup.py).

Keys made by earlier versions (``type|id|recipient``, ``nf:sent:{id}:{user}:...``) are not
migrated: dedup entries live an hour and markers their TTL, so for that long after an
upgrade a replay of a request sent before it is not recognised.
"""

from __future__ import annotations

import re
from hashlib import blake2b

SENT = "nf:sent:"  # + the send identity (hex): one marker per send, with a TTL
SEND_KEY_RE = re.compile(r"[0-9a-f]{32}")  # a send identity as tasks carry it
API_PRODUCER = "api:"  # + 16 hex digits of an API key's hash: the gateway's namespaces

Event = tuple[str, str] | None  # (actor, object) of a request's dedup parts


def identity(producer: str, type_: str, event: Event, nid: str, user: str,
             channel: str | None = None, target: str = "") -> bytes:
    """The 16-byte digest naming a notification for ``user`` (dedup: ``channel`` None) or
    one send of it on ``channel`` to ``target`` (the sent-marker).

    The event is the dedup parts when the request has them, else its id.  A send's identity
    adds the id even when dedup parts exist: a later request for the same event, after the
    dedup window, is a new notification and must not meet the first one's marker."""
    if event is None:
        tag, a, b = "i", nid, ""
    else:
        tag, (a, b) = "e", event
    if channel is None:
        text = (f"d{tag}{len(producer)},{len(type_)},{len(a)},{len(b)},{len(user)};"
                f"{producer}{type_}{a}{b}{user}")
    else:
        text = (f"s{tag}{len(producer)},{len(type_)},{len(a)},{len(b)},{len(user)},{len(nid)},"
                f"{len(channel)},{len(target)};{producer}{type_}{a}{b}{user}{nid}{channel}{target}")
    return blake2b(text.encode(), digest_size=16).digest()


def send_key(producer: str, type_: str, event: Event, nid: str, user: str, channel: str,
             target: str) -> str:
    """The sent-marker identity of one send, as carried by a task (32 hex digits)."""
    return identity(producer, type_, event, nid, user, channel, target).hex()


def gateway_producer(key_hash: str) -> str:
    """The producer namespace of an API key: from its hash, so names reused after a revoke
    do not share it, and a client cannot pick another key's."""
    return API_PRODUCER + key_hash[:16]
