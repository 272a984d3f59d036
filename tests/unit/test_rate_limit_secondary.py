"""A secondary bucket (an SMS provider's, behind the sender number's) waits within the
same ``rate_max_wait_s`` as the first, and what it does not grant is deferred: run on a
fake clock with the Redis script replaced by the same arithmetic (operators/token_bucket)."""

import pytest

from notiflow.config import Settings
from operators.token_bucket import BucketState, take
from schemas.task import DeliveryTask
from sinks import results as R
from sinks.rate_limit import DEFERRED, KEY_PREFIX, ProviderLimits, provider_key

HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        assert s >= 0
        self.t += s
        if self.t > 1000.0 + HOUR:  # the old path: a wait without limit
            raise TimeoutError("waited an hour of fake time for tokens")


class FakeRedis:
    """``register_script`` -> the token-bucket arithmetic on the fake clock; ``drained``
    keys are emptied before each take (another process takes every token as it comes)."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.state, self.drained = clock, {}, set()

    def register_script(self, _lua: str):
        def run(keys, args):
            key = keys[0]
            rate, burst, want, min_take = (float(a) for a in args[:4])
            now_us = int(self.clock() * 1e6)
            if key in self.drained:
                self.state[key] = BucketState(0.0, now_us)
            t = take(self.state.get(key), now_us, rate, burst, want, min_take, float(args[5]))
            self.state[key] = t.state
            return str(t.granted), str(t.wait_s), str(now_us)
        return run


def sms(i: int) -> DeliveryTask:
    return DeliveryTask(notification_id=f"n{i}", user_id=f"u{i}", type="t", priority="high",
                        channel="sms", provider="twilio", target_id="phone",
                        address=f"+1444{i:07d}", title=None, body="b", template=None,
                        data=None, collapse_key=None, created_ms=0)


@pytest.fixture
def setup():
    clock = Clock()
    fake = FakeRedis(clock)
    cfg = Settings(rate_sms_number_per_s=10, rate_twilio_per_s=50, rate_burst_s=1,
                   rate_critical_reserve=0, rate_max_wait_s=2.0)
    limits = ProviderLimits(cfg, fake, sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]
    return clock, fake, limits


def test_drained_secondary_bucket_defers_within_max_wait_instead_of_blocking(setup):
    clock, fake, limits = setup
    fake.drained.add(KEY_PREFIX + provider_key("twilio"))  # the provider-wide bucket
    assert [b.key for b in limits.buckets_for("twilio")][1] == KEY_PREFIX + provider_key("twilio")
    sent_parts: list[int] = []
    sent, deferred = limits.send("twilio", [sms(i) for i in range(20)],
                                 lambda part: sent_parts.append(len(part)) or
                                 [R.sent(t) for t in part])
    assert sent == [] and sent_parts == []
    assert len(deferred) == 20 and all(d.status == "retry" for d in deferred)
    assert all(d.reason.startswith(f"{DEFERRED} twilio") for d in deferred)
    assert clock.t - 1000.0 <= 2.0 + 1e-6  # waited at most rate_max_wait_s


def test_secondary_grants_what_it_can_then_the_rest_is_deferred(setup):
    clock, fake, limits = setup
    key = KEY_PREFIX + provider_key("twilio")
    sent: list = []

    def send_fn(part):
        if len(sent) + len(part) >= 12:  # from now on another process drains the provider
            fake.drained.add(key)
        out = [R.sent(t) for t in part]
        sent.extend(out)
        return out

    done, later = limits.send("twilio", [sms(i) for i in range(40)], send_fn)
    assert len(done) == len(sent) >= 12 and len(done) + len(later) == 40
    assert later and all(d.status == "retry" and d.retry_after > 0 for d in later)
    assert [d.task.notification_id for d in later] == [f"n{i}" for i in range(len(done), 40)]
    assert clock.t - 1000.0 <= 2.0 + 1e-6
