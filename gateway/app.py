"""The gateway's FastAPI app: ``create_app(settings)`` builds it, its lifespan owns the clients.

Shared state on ``app.state`` (other routers use these; set up in the lifespan, so present
whenever a request is served):

* ``app.state.settings`` -- the ``notiflow.config.Settings`` the app was made with.
* ``app.state.redis`` -- a ``redis.asyncio.Redis`` client on ``settings.redis_url``.
* ``app.state.producer`` -- a ``gateway.producer.GatewayProducer``.  Publish with
  ``await app.state.producer.produce(topic, value, key, partition=p)``: when it returns
  the record is acked by Kafka (acks=all) or fsynced in the spool, replayed in order
  later.  For user-keyed topics pass ``partition=notiflow.topics.partition_for(user,
  settings.partitions)`` (notify.devices is keyed ``user:token`` but partitioned by user).
  ``await producer.send([OutRecord(...), ...])`` does many with one fsync.
* ``app.state.key_store`` / ``app.state.try_acquire`` -- API key look-up and the per-key
  token bucket, used by ``gateway.api_keys.require_scope(scope)`` (a FastAPI dependency).

Errors from every router come back as ``{"error": ..., "reason": "<field>: <problem>"}``:
raise ``HTTPException(status, {"error": ..., "reason": ...})`` or with a plain string
``detail`` (it becomes the reason).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

import gateway.dashboard
import gateway.people
from gateway import fanouts, notifications
from gateway.api_keys import KeyStore, make_try_acquire
from gateway.live import LiveSlots
from gateway.producer import GatewayProducer
from gateway.user_tokens import secret_problem
from notiflow import metrics
from notiflow.config import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        refuse_insecure(settings)
        app.state.settings = settings
        # redis-py's default pool raises "Too many connections" past 100 concurrent
        # requests; a blocking pool makes request 101 wait its turn instead
        app.state.redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=settings.gateway_redis_connections, timeout=5))
        # live streams hold a pub/sub connection each (user live mode) for as long as they
        # are open: their own pool, so open streams never take the other routes' connections
        app.state.live_redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=settings.gateway_live_max_streams + 1, timeout=5))
        app.state.live_slots = LiveSlots(settings.gateway_live_max_streams,
                                         settings.gateway_live_max_per_user,
                                         settings.gateway_live_max_per_key)
        app.state.key_store = KeyStore(app.state.redis, settings.gateway_key_cache_s,
                                       settings.gateway_default_rate,
                                       settings.gateway_default_burst)
        app.state.try_acquire = _rate_limiter(app.state.redis)
        app.state.producer = GatewayProducer(settings)
        await app.state.producer.start()
        log.info("gateway ready (kafka %s, spool %s)", settings.kafka_brokers,
                 settings.gateway_spool_dir)
        try:
            yield
        finally:
            await app.state.producer.close()
            await app.state.redis.aclose()
            await app.state.live_redis.aclose()

    app = FastAPI(title="notiflow gateway", version="1",
                  summary="Submit notifications over HTTP; people's inbox and settings.",
                  lifespan=lifespan)
    app.state.settings = settings
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(notifications.router)
    app.include_router(gateway.people.router)
    app.include_router(gateway.dashboard.router)
    app.include_router(fanouts.router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", summary="Liveness, and whether Kafka or the spool takes requests")
    async def healthz(request: Request) -> dict:
        p = request.app.state.producer
        return {"ok": True, "kafka": "spooling" if p.spooling else "up",
                "spool_pending": p.spool.pending}

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, summary=app.summary,
                               routes=app.routes)
            spec.setdefault("components", {}).setdefault("schemas", {}).update(
                notifications.openapi_components())
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


# routes anyone may call, deliberately: they carry no user's data
PUBLIC = {
    "/healthz": "liveness for load balancers",
    "/metrics": "Prometheus counters (no user data; keep the port internal)",
    "/dashboard": "the dashboard page itself (its data needs an admin key)",
    "/dashboard/static/{name}": "the page's fixed script and style sheet",
    "/openapi.json": "the API's description",
    "/docs": "the API's description, rendered",
    "/docs/oauth2-redirect": "part of /docs",
    "/redoc": "the API's description, rendered",
}


def route_auth(app: FastAPI) -> dict[str, str | None]:
    """``"METHOD /path"`` -> who may call it (None: nobody declared it), for every route."""
    out: dict[str, str | None] = {}
    for route in iter_route_contexts(app.routes):  # included routers' routes too
        path = str(route.path)
        dependant = getattr(route, "dependant", None)  # with its routers' dependencies
        who = (_declared(dependant) if dependant is not None else None) or (
            PUBLIC.get(path) and f"anyone: {PUBLIC[path]}")
        for m in sorted(route.methods or ["*"]):
            out[f"{m} {path}"] = who
    return out


def _declared(dependant: Dependant) -> str | None:
    for dep in dependant.dependencies:
        who = getattr(dep.call, "__auth__", None) or _declared(dep)
        if who:
            return who
    return None


class InsecureSettings(RuntimeError):
    """The gateway would run with a setting that lets anyone act as someone else."""


def refuse_insecure(settings: Settings) -> None:
    """Raise InsecureSettings (before anything is served) when a secret is not safe."""
    if (why := secret_problem(settings)) is not None:
        raise InsecureSettings(f"gateway refuses to start: {why}")


def _rate_limiter(redis: aioredis.Redis):
    """Engineer T's shared Redis token bucket when present, else the minimal one here."""
    return make_try_acquire(redis)


def _error_body(status: int, detail) -> dict:
    if isinstance(detail, dict) and "reason" in detail:
        return {"error": str(detail.get("error") or _phrase(status)), "reason": str(detail["reason"]),
                **{k: v for k, v in detail.items() if k not in ("error", "reason")}}
    return {"error": _phrase(status), "reason": str(detail)}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_")
    except ValueError:
        return "error"


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    body = _error_body(exc.status_code, exc.detail)
    metrics.GATEWAY_REJECTED.labels(str(exc.status_code), body["error"]).inc()
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",)) or "request"
    metrics.GATEWAY_REJECTED.labels("422", "invalid").inc()
    return JSONResponse({"error": "invalid", "reason": f"{where}: {first.get('msg', 'invalid')}"},
                        status_code=422)
