"""One meaning of "critical" (schemas/request.py ``is_critical``) in routing, retries,
escalation and the rate-limit reserve.

It used to be lane-or-priority in routing (no quiet hours, no bundling) but priority only
afterwards: a normal-priority request read from notify.critical skipped quiet hours when
routed, then its retry waited for them, it took no rate-limit reserve and never escalated.
"""

from __future__ import annotations

import random

import orjson
import pytest

from notiflow.topics import partition_for
from operators.backoff import BackoffPolicy
from operators.escalation import escalate
from operators.partition import REQUEST, SETTINGS, PartitionProcessor
from operators.retry_plan import plan_retry
from schemas.request import PRIORITIES, is_critical

N = 4
NOW = 1_764_050_000_000  # 2025-11-25 05:53 UTC
QUIET = {"start": "00:00", "end": "23:59", "tz": "UTC"}  # always quiet


def user_in(p: int) -> str:
    return next(u for i in range(1000) if partition_for(u := f"u{i}", N) == p)


def batch(user: str, priority: str) -> list:
    return [
        (SETTINGS, user.encode(), orjson.dumps({"user_id": user, "quiet_hours": QUIET,
                                                "phone": "+15550100"}), 0),
        (REQUEST, user.encode(), orjson.dumps({
            "id": "n1", "type": "auth.code", "created_at": NOW - 10, "recipients": [user],
            "body": "1234", "channels": ["push"], "priority": priority,
            "collapse_key": "code"}), 1),
    ]


def test_only_the_critical_priority_is_critical():
    assert [p for p in PRIORITIES if is_critical(p)] == ["critical"]


@pytest.mark.parametrize("priority", ["normal", "low", "high"])
def test_a_request_on_the_critical_lane_is_critical_in_every_later_step(priority):
    u = user_in(0)
    proc = PartitionProcessor(0, N, lane="critical", bundle_windows={"auth": 60})
    out = proc.process(batch(u, priority), NOW)
    # routed now (not held for quiet hours, not bundled), escalated to SMS for lack of a
    # device, and its task says critical: no quiet hours for its retries, and the
    # rate limiter (sinks/rate_limit.py, which asks is_critical) gives it the reserve
    [t] = out.sms
    assert t.priority == "critical" and t.quiet is None
    env = plan_retry(t, "twilio", "503", None, NOW, BackoffPolicy(), random.Random(1))
    assert env.due_ms - NOW < 3_600_000  # not at the end of the quiet hours
    assert escalate(t.type, t.priority, "sms", {"*": ["push", "sms", "email"]}) == "email"
    assert all(r.priority == "critical" for r in out.receipts)


def test_a_normal_request_on_the_bulk_lane_waits_for_quiet_hours():
    u = user_in(0)
    proc = PartitionProcessor(0, N, lane="requests")
    out = proc.process(batch(u, "normal"), NOW)
    assert out.push == out.sms == [] and len(proc.hold) == 1


def test_a_critical_request_on_the_bulk_lane_is_critical_too():
    u = user_in(0)
    proc = PartitionProcessor(0, N, lane="requests", bundle_windows={"auth": 60})
    [t] = proc.process(batch(u, "critical"), NOW).sms
    assert t.priority == "critical" and t.quiet is None

