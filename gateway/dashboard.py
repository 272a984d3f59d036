"""The delivery dashboard: the page at GET /dashboard and its JSON data under /v1/dashboard/.

Why this shape: chDB belongs to the loader process, so the charts ask the loader for its
named queries (loader/queries.py, loader/client.py: no SQL text travels), which read the
per-minute rollups (loader/rollups.py) rather than raw receipts; the live badge and inbox
come from the in-app sink's Redis keys through gateway/inbox.py (read directly, not through
the people's API, so an operator looking does not count as the user being active). The page
itself carries no data and needs no key; every data endpoint needs an API key with the
``admin`` scope. The page asks for the key in a form, keeps it in sessionStorage (gone when
the tab closes) and sends it as a Bearer header; a key in the URL would end up in logs,
history and Referer headers, so the page refuses ``?key=``. The page's headers forbid
Referer and any script, style or connection not from this origin."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from redis.exceptions import RedisError

from gateway.api_keys import require_scope
from gateway.inbox import Inbox
from gateway.user_tokens import USER_ID_RE
from loader.client import Loader, LoaderError
from loader.queries import MAX_MINUTES

STATIC = Path(__file__).resolve().parent / "static"
# the page's own files: a fixed list, so no request can name another file
_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_QUERY_TIMEOUT_S = 10.0
# the page runs only its own files; no framing, no Referer, nothing fetched elsewhere
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'none'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}

Minutes = Annotated[int, Query(ge=1, le=MAX_MINUTES, description="window, minutes back from now")]

router = APIRouter(tags=["dashboard"])
data = APIRouter(prefix="/v1/dashboard", dependencies=[Depends(require_scope("admin"))])


@router.get("/dashboard", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/dashboard/static/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if name not in _ASSETS:
        raise HTTPException(404, {"error": "not_found", "reason": f"no dashboard file {name!r}"})
    return FileResponse(STATIC / name, media_type=_ASSETS[name], headers=PAGE_HEADERS)


def _fail(status: int, error: str, reason: str) -> HTTPException:
    """The gateway's error shape: {"detail": {"error", "reason"}}."""
    return HTTPException(status, {"error": error, "reason": reason})


async def run_named(request: Request, name: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of the loader's named query ``name``, as dicts by column name. The loader down
    or refusing the query is a 502/503 with its reason, never a crash."""
    try:
        res = await Loader.from_settings(request.app.state.settings).arun(
            name, timeout=_QUERY_TIMEOUT_S, **params)
    except LoaderError as exc:
        if exc.status == 0:
            raise _fail(503, "unavailable", f"receipts store unreachable: {exc.message}") from exc
        raise _fail(502, "bad_gateway", f"receipts store refused the query ({exc.status}): "
                                        f"{exc.message}") from exc
    return res.dicts()


def bucket_minutes(minutes: int, max_points: int = 120) -> int:
    """Minutes per chart point, so a long window still draws at most ``max_points`` bars."""
    return max(1, -(-minutes // max_points))


@data.get("/deliveries")
async def deliveries(request: Request, minutes: Minutes = 60) -> dict:
    """Receipts per time bucket, channel and outcome (from notiflow.receipts_by_minute)."""
    bucket = bucket_minutes(minutes)
    rows = await run_named(request, "dash_deliveries", minutes=minutes, bucket=bucket)
    return {"minutes": minutes, "bucket_minutes": bucket, "now": int(time.time()),
            "rows": [{**r, "receipts": int(r["receipts"])} for r in rows]}


@data.get("/latency")
async def latency(request: Request, minutes: Minutes = 60) -> dict:
    """Latency p50/p99 of sent notifications per priority (t-digest states of the rollup)."""
    rows = await run_named(request, "dash_latency", minutes=minutes)
    return {"minutes": minutes, "rows": [{**r, "sent": int(r["sent"])} for r in rows]}


@data.get("/failures")
async def failures(request: Request, minutes: Minutes = 60,
                   limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict:
    """The most frequent reasons for failed, rejected, expired and undeliverable receipts."""
    rows = await run_named(request, "dash_failures", minutes=minutes, limit=limit)
    return {"minutes": minutes, "rows": [{**r, "receipts": int(r["receipts"])} for r in rows]}


@data.get("/users/{user_id}/inapp")
async def user_inapp(request: Request,
                     user_id: Annotated[str, PathParam(pattern=USER_ID_RE.pattern)],
                     limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict:
    """A user's unread badge and newest inbox entries (with read flags), live from Redis."""
    try:
        page = await Inbox(request.app.state.redis).page(user_id, limit)
    except RedisError as exc:
        raise _fail(503, "unavailable", f"in-app store unreachable: {exc}") from exc
    return {"user_id": user_id, "badge": page.unread, "inbox_total": page.total,
            "inbox": page.entries}


router.include_router(data)
