"""Which requests a producer key may send: the type's scope, and "broadcast" for audience all.

A key scoped to "social.*" (or even "*") must not reach every user: a broadcast needs the
explicit "broadcast" scope, on the single and the batch endpoint alike (both call
``scope_problem``)."""

from __future__ import annotations

import pytest

from gateway.api_keys import ApiKey, check_scope_pattern, scope_allows
from gateway.notifications import scope_problem
from schemas.request import Audience, NotificationRequest


def key(*scopes: str) -> ApiKey:
    return ApiKey(name="k", scopes=scopes, rate=1, burst=1, key_hash="0" * 64)


def req(audience: Audience | None = None, type_: str = "social.post") -> NotificationRequest:
    return NotificationRequest(id="n1", type=type_, created_at=1, body="b",
                               recipients=[] if audience else ["u1"], audience=audience)


ALL = Audience(kind="all")
FOLLOWERS = Audience(kind="followers", id="u42")


@pytest.mark.parametrize(("scopes", "request_", "allowed"), [
    (("social.*",), req(), True),
    (("social.*",), req(FOLLOWERS), True),  # the producer's own followers fan-out
    (("social.*",), req(ALL), False),  # but not every user
    (("*",), req(ALL), False),  # "*" is every type, not every user
    (("*", "admin"), req(ALL), False),
    (("social.*", "broadcast"), req(ALL), True),
    (("broadcast",), req(ALL), False),  # broadcast alone names no type
    (("billing.*", "broadcast"), req(ALL), False),
])
def test_scope_problem(scopes, request_, allowed):
    why = scope_problem(key(*scopes), request_)
    assert (why is None) is allowed, why
    if request_.audience is ALL and not allowed and key(*scopes).allows(request_.type):
        assert why is not None and "broadcast" in why


def test_broadcast_is_an_explicit_scope():
    assert check_scope_pattern("broadcast") == "broadcast"
    assert scope_allows(["broadcast"], "broadcast")
    assert not scope_allows(["*"], "broadcast")
    assert not scope_allows(["broadcast"], "social.like")
