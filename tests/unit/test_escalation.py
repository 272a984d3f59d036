"""Escalation of critical notifications along per-type channel chains."""

import pytest

from operators.escalation import DEFAULT_ESCALATION, chain_for, escalate

CHAINS = {"auth.code": ["push", "sms"], "ride.arriving": ["push", "sms", "email"],
          "*": ["push", "sms"]}


def test_escalation_default_is_push_then_sms():
    assert escalate("auth.code", "critical", "push", DEFAULT_ESCALATION) == "sms"
    assert escalate("auth.code", "critical", "push") == "sms"
    assert escalate("auth.code", "critical", "sms") is None


def test_escalation_follows_per_type_chain():
    assert escalate("ride.arriving", "critical", "push", CHAINS) == "sms"
    assert escalate("ride.arriving", "critical", "sms", CHAINS) == "email"
    assert escalate("ride.arriving", "critical", "email", CHAINS) is None


def test_escalation_other_types_use_star_chain():
    assert escalate("billing.fraud", "critical", "push", CHAINS) == "sms"


def test_escalation_falls_back_to_builtin_without_star():
    only = {"ride.arriving": ["push", "email"]}
    assert escalate("ride.arriving", "critical", "push", only) == "email"
    assert escalate("auth.code", "critical", "push", only) == "sms"


def test_escalation_empty_chain_turns_it_off():
    assert escalate("auth.code", "critical", "push", {"*": []}) is None
    assert chain_for("x", {"x": [], "*": ["push", "sms"]}) == []


@pytest.mark.parametrize("priority", ["high", "normal", "low", ""])
def test_escalation_non_critical_never_escalates(priority):
    assert escalate("ride.arriving", priority, "push", CHAINS) is None


def test_escalation_channel_outside_chain_does_not_escalate():
    assert escalate("auth.code", "critical", "inapp", CHAINS) is None
    assert escalate("auth.code", "critical", "email", CHAINS) is None
