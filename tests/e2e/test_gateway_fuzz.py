"""Fuzz the gateway's own OpenAPI spec (schemathesis): no 5xx on any generated input.

Every operation of the served spec is called on a real uvicorn process, over real Kafka
and Redis, with schema-conforming and schema-violating inputs, with a valid API key
(an admin key covering every type, so requests get past auth to validation).
The live stream (SSE) is left out: a 200 there never ends, which is its job.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from gateway.app import create_app
from notiflow.config import Settings
from stack.services import start_gateway
from tests.e2e.test_gateway import make_key


@pytest.fixture(scope="module")
def fuzz_gateway(stack, tmp_path_factory):
    env = {**stack.env(), "NOTIFLOW_GATEWAY_SPOOL_DIR": str(tmp_path_factory.mktemp("spool")),
           "NOTIFLOW_GATEWAY_LOG_REQUESTS": "false"}
    g = start_gateway(env, stack.workdir / "logs", name="gateway-fuzz")
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def fuzz_key(stack) -> str:
    return make_key(stack.redis_url, "g1-fuzz", "*", "admin", rate=100_000, burst=100_000)


# The spec comes from the same factory the server runs (create_app), built at collection
# time: schemathesis' lazy ``from_fixture`` fails on pytest 9 (``request.node._nodeid``).
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi()).exclude(
    path_regex=r"/live$")
# valid and invalid inputs both (the default is schema-conforming only); no generated
# credentials: they would stop nearly every case at 401 (tests/e2e/test_gateway.py covers
# bad credentials), so every case carries a valid admin key and reaches validation
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                with_security_parameters=False)


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_server_errors(case, fuzz_key, fuzz_gateway):
    headers = {**(case.headers or {}), "Authorization": f"Bearer {fuzz_key}"}
    case.call_and_validate(base_url=fuzz_gateway.url, headers=headers, timeout=30,
                           checks=[not_a_server_error])
