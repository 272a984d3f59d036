"""Every gateway route says who may call it: an auth dependency, or a place in PUBLIC.

A route added without one fails here, before it can serve anyone's data to anyone."""

from __future__ import annotations

import asyncio
import re

import httpx

from gateway.app import PUBLIC, create_app, route_auth
from notiflow.config import Settings


def test_every_route_declares_who_may_call_it():
    undeclared = [r for r, who in route_auth(create_app(Settings())).items() if who is None]
    assert undeclared == []


def test_public_names_only_routes_that_exist():
    paths = {r.split(" ", 1)[1] for r in route_auth(create_app(Settings()))}
    assert set(PUBLIC) <= paths


def test_a_route_without_auth_is_caught():
    app = create_app(Settings())

    @app.get("/v1/oops")
    async def oops() -> dict:
        return {}

    assert route_auth(app)["GET /v1/oops"] is None


def test_every_route_not_public_refuses_a_caller_without_credentials():
    app = create_app(Settings())
    closed = [r for r, who in route_auth(app).items()
              if not who.startswith("anyone") and not r.startswith("HEAD ")]
    assert len(closed) >= 15

    async def call_all() -> dict[str, int]:
        transport = httpx.ASGITransport(app=app)  # no lifespan: nothing but the auth runs
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            out = {}
            for r in closed:
                method, path = r.split(" ", 1)
                url = re.sub(r"\{[a-z_]+\}", "x1", path)
                out[r] = (await c.request(method, url, content=b"{}")).status_code
            return out

    statuses = asyncio.run(call_all())
    assert {r: s for r, s in statuses.items() if s != 401} == {}
