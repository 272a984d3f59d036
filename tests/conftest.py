"""Shared fixtures: one real local stack (Tansu, Redis, sandbox, loader/chDB) per session.

The flows are not part of it: end-to-end tests start the lanes they need with
``stack.services.start_flow`` against ``stack.env()``, so each test controls recovery
folders, retry timings and crashes.  Imports are lazy so that unit tests run (and this file
imports) even when a part of the stack cannot start.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The running stack (stack.env.Stack); always torn down, also when a test fails."""
    from stack.env import start_stack

    s = start_stack(workdir=tmp_path_factory.mktemp("stack"), with_flows=False)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def kafka_producer(stack):
    """A confluent-kafka Producer on the session's brokers, flushed after the test.

    Produce with an explicit ``partition=notiflow.topics.partition_for(user, P)`` for the
    user-keyed topics (or just key by user id: librdkafka's default partitioner agrees)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 2})
    yield p
    left = p.flush(10)
    assert left == 0, f"{left} message(s) never reached Kafka"


@pytest.fixture(scope="module")
def producer(stack):
    """A module's Kafka producer; what its tests produced has reached Kafka when it ends."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 1})
    yield p
    assert p.flush(10) == 0, "messages never reached Kafka"


def pytest_terminal_summary(terminalreporter):
    """The fault suite's figures (tests/faults): faults injected, accepted, delivered..."""
    try:
        from tests.faults.conftest import SUMMARY
    except ImportError:
        return
    if not SUMMARY:
        return
    tr = terminalreporter
    tr.section("fault suite")
    tr.write_line(f"{'fault':46} {'injected':>8} {'accepted':>8} {'delivered':>9} {'lost':>5} {'dup':>4}")
    for r in SUMMARY:
        tr.write_line(f"{r['fault']:46} {r['injected']:>8} {r['accepted']:>8} {r['delivered']:>9} "
                      f"{r['lost']:>5} {r['duplicated']:>4}")
