"""Provider choice along a failover chain, and what a batch tells a breaker."""

from operators.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from operators.failover import pick_provider, record_batch

CHAIN = ["sendgrid", "ses", "mailgun"]


def breakers(**kw):
    return {p: CircuitBreaker(p, failure_threshold=1, open_s=30, **kw) for p in CHAIN}


def test_failover_picks_first_in_configured_order():
    assert pick_provider(CHAIN, breakers(), 0, set()) == "sendgrid"


def test_failover_skips_open_breaker():
    bs = breakers()
    bs["sendgrid"].record_failure(0)
    assert pick_provider(CHAIN, bs, 1_000, set()) == "ses"


def test_failover_skips_providers_already_tried():
    assert pick_provider(CHAIN, breakers(), 0, {"sendgrid"}) == "ses"
    assert pick_provider(CHAIN, breakers(), 0, {"sendgrid", "ses"}) == "mailgun"


def test_failover_none_when_all_open_or_tried():
    bs = breakers()
    bs["sendgrid"].record_failure(0)
    bs["ses"].record_failure(0)
    assert pick_provider(CHAIN, bs, 1_000, {"mailgun"}) is None
    assert pick_provider(CHAIN, breakers(), 0, set(CHAIN)) is None
    assert pick_provider([], breakers(), 0, set()) is None


def test_failover_returns_to_primary_once_its_breaker_half_opens():
    bs = breakers()
    bs["sendgrid"].record_failure(0)
    assert pick_provider(CHAIN, bs, 10_000, set()) == "ses"
    assert pick_provider(CHAIN, bs, 30_000, set()) == "sendgrid"  # the probe
    assert bs["sendgrid"].state == HALF_OPEN
    assert pick_provider(CHAIN, bs, 30_001, set()) == "ses"  # probe still out


def test_failover_does_not_claim_probes_of_providers_it_passes_over():
    bs = breakers()
    bs["ses"].record_failure(0)
    assert pick_provider(CHAIN, bs, 40_000, set()) == "sendgrid"
    assert bs["ses"].state == OPEN  # never asked, so its probe is still free
    assert pick_provider(CHAIN, bs, 40_001, {"sendgrid"}) == "ses"


def test_failover_provider_without_breaker_is_allowed():
    assert pick_provider(["vonage"], {}, 0, set()) == "vonage"


def test_failover_record_batch_all_retryable_is_one_failure():
    b = CircuitBreaker("twilio", failure_threshold=2)
    record_batch(b, answered=0, retryable=500, now_ms=0)
    assert b.failures == 1 and b.state == CLOSED
    record_batch(b, answered=0, retryable=3, now_ms=1)
    assert b.state == OPEN


def test_failover_record_batch_any_answer_is_success():
    b = CircuitBreaker("twilio", failure_threshold=2)
    record_batch(b, answered=0, retryable=1, now_ms=0)
    record_batch(b, answered=1, retryable=99, now_ms=1)  # permanent 4xx counts too
    assert b.failures == 0 and b.state == CLOSED


def test_failover_record_batch_empty_records_nothing():
    b = CircuitBreaker("twilio", failure_threshold=1)
    record_batch(b, answered=0, retryable=0, now_ms=0)
    assert b.state == CLOSED and b.failures == 0


def test_failover_record_batch_settles_a_half_open_probe():
    b = CircuitBreaker("twilio", failure_threshold=1, open_s=1)
    b.record_failure(0)
    assert b.allow(1_000)
    record_batch(b, answered=1, retryable=0, now_ms=1_001)
    assert b.state == CLOSED
