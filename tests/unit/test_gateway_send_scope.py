"""Which requests a producer key may send: the type's scope, the audiences granted to the
key, and "broadcast" for audience all.

A key scoped to "social.*" (or even "*") must not reach every user, nor any audience it
was not given: a broadcast needs the explicit "broadcast" scope, a followers or topic
audience an ``audiences`` entry, on the single and the batch endpoint alike (both call
``scope_problem``).  What a request costs: one rate token per recipient."""

from __future__ import annotations

import pytest

from gateway.api_keys import ApiKey, check_audience_pattern, check_scope_pattern, scope_allows
from gateway.notifications import cost, scope_problem
from schemas.request import Audience, NotificationRequest


def key(*scopes: str, audiences: tuple[str, ...] = ()) -> ApiKey:
    return ApiKey(name="k", scopes=scopes, rate=1, burst=1, key_hash="0" * 64,
                  audiences=audiences)


def req(audience: Audience | None = None, type_: str = "social.post") -> NotificationRequest:
    return NotificationRequest(id="n1", type=type_, created_at=1, body="b",
                               recipients=[] if audience else ["u1"], audience=audience)


ALL = Audience(kind="all")
FOLLOWERS = Audience(kind="followers", id="u42")
TOPIC = Audience(kind="topic", id="sports")


@pytest.mark.parametrize(("scopes", "request_", "allowed"), [
    (("social.*",), req(), True),
    (("social.*",), req(FOLLOWERS), False),  # before: any key reached any audience
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


@pytest.mark.parametrize(("audiences", "request_", "allowed"), [
    (("followers:u42",), req(FOLLOWERS), True),
    (("followers:*",), req(FOLLOWERS), True),
    (("followers:u7",), req(FOLLOWERS), False),
    (("topic:*",), req(FOLLOWERS), False),
    (("topic:sports",), req(TOPIC), True),
    (("topic:*",), req(TOPIC), True),
    (("topic:*", "followers:*"), req(ALL), False),  # "all" is the broadcast scope's
])
def test_audiences_granted_to_the_key(audiences, request_, allowed):
    why = scope_problem(key("social.*", audiences=audiences), request_)
    assert (why is None) is allowed, why
    if not allowed:
        assert why.startswith("audience: ")


def test_broadcast_reaches_every_audience():
    assert scope_problem(key("social.*", "broadcast"), req(TOPIC)) is None


@pytest.mark.parametrize("pat", ["topic:sports", "topic:*", "followers:u-42", "followers:*"])
def test_good_audience_patterns(pat):
    assert check_audience_pattern(pat) == pat


@pytest.mark.parametrize("pat", ["all", "all:*", "topic", "topic:", "*", "group:x",
                                 "topic:a b", "followers:x\n"])
def test_bad_audience_patterns(pat):
    with pytest.raises(ValueError, match="audience"):
        check_audience_pattern(pat)


def test_a_request_costs_one_token_a_recipient():
    many = NotificationRequest(id="n", type="t", created_at=1, body="b",
                               recipients=[f"u{i}" for i in range(1000)])
    assert cost(many, audience_cost=500) == 1000  # before: one request, one token
    assert cost(req(TOPIC), audience_cost=500) == 500
