"""The delivery dashboard in headless Chromium, over a real run of the whole stack.

A few hundred notifications go through the real flows (every channel; some failing at the
sandbox, some suppressed, some duplicated, some rejected); once the loader has their
receipts the real gateway (``python -m gateway``) serves the page, Debian's Chromium loads
it, and every chart must have drawn data points with no console error. The screenshot is
saved to var/dashboard.png (docs/dashboard.png is a copy of one).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis
from confluent_kafka import Producer

from gateway.api_keys import create_key
from loader.client import local_sql
from notiflow.topics import partition_for
from sandbox.client import SandboxControl

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "var" / "dashboard.png"
P = 4  # partitions of the stack fixture (Settings.partitions)
CHARTS = ("chart-deliveries", "chart-latency", "chart-failures", "chart-badge")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
N_USERS, N_REQUESTS = 30, 320

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} missing: `make test` installs Debian chromium")


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def flows(stack, tmp_path_factory):
    from stack.services import start_flow

    started = []
    env = {**stack.env(), "NOTIFLOW_RETRY_BASE_S": "0.2", "NOTIFLOW_RETRY_CAP_S": "1",
           "NOTIFLOW_RETRY_DEADLINE_S": "4"}
    try:
        for lane in ("main", "critical", "retry"):
            started += start_flow(lane, env, recovery_dir=tmp_path_factory.mktemp(f"dash-{lane}"))
        yield started
    finally:
        for s in reversed(started):
            s.stop()


@pytest.fixture(scope="module")
def gateway(stack, tmp_path_factory):
    from stack.services import start_gateway

    env = {**stack.env(), "NOTIFLOW_GATEWAY_SPOOL_DIR": str(tmp_path_factory.mktemp("spool"))}
    g = start_gateway(env, log_dir=tmp_path_factory.mktemp("gateway-logs"))
    try:
        yield g
    finally:
        g.stop()


def new_key(stack, name: str, scopes: list[str]) -> str:
    async def make() -> str:
        r = aioredis.from_url(stack.redis_url)
        try:
            return await create_key(r, f"{name}-{uuid.uuid4().hex[:6]}", scopes, 100, 200)
        finally:
            await r.aclose()

    return asyncio.run(make())


def publish_run(stack, tag: str) -> tuple[list[str], str]:
    """Users with every kind of outcome, then N_REQUESTS notifications; returns
    (the notification ids, a user who gets in-app notifications)."""
    prod = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 2})
    users = [f"{tag}-u{i}" for i in range(N_USERS)]
    for i, u in enumerate(users):
        kind = i % 10
        settings = {"v": 1, "user_id": u, "email": f"{u}@example.com",
                    "phone": "+15005550004" if kind == 1 else f"+1555{i:07d}"}
        if kind == 5:
            settings["opt_out_types"] = ["marketing"]
        if kind == 7:
            settings["channels"] = {"sms": False}
        p = partition_for(u, P)
        prod.produce("notify.settings", orjson.dumps(settings), u.encode(), partition=p)
        devices = [] if kind == 9 else [
            ("phone", "apns", ("gone" + "0" * 60) if kind == 3 else f"{i:02d}" * 32),
            ("tablet", "fcm", ("bad" + "1" * 40) if kind == 4 else f"f{i:02d}" * 20)]
        for token_id, platform, token in devices:
            prod.produce("notify.devices", orjson.dumps({
                "v": 1, "user_id": u, "token_id": token_id, "platform": platform,
                "token": token, "active": True}), f"{u}:{token_id}".encode(), partition=p)
    assert prod.flush(10) == 0  # settings acknowledged before any request

    channel_sets = [["push", "inapp"], ["email"], ["sms"], ["push", "email", "inapp"], ["inapp"]]
    nids = []
    for i in range(N_REQUESTS):
        u = users[i % N_USERS]
        nid = f"{tag}-n{i}"
        body = {"v": 1, "id": nid, "recipients": [u], "created_at": now_ms(),
                "title": f"Hello {i}", "body": f"notification {i}"}
        topic = "notify.requests"
        if i % 16 == 0:
            topic = "notify.critical"
            body.update(type="auth.code", priority="critical", channels=["push"])
        else:
            body.update(type="marketing.weekly" if i % 5 == 0 else "social.like",
                        priority=("high", "normal", "low")[i % 3],
                        channels=channel_sets[i % len(channel_sets)],
                        dedup={"actor": f"a{i}", "object": "photo"})
        prod.produce(topic, orjson.dumps(body), u.encode(), partition=partition_for(u, P))
        nids.append(nid)
        if i % 10 == 3:  # the same event again under a new id: a duplicate
            again = {**body, "id": f"{nid}-again"}
            prod.produce(topic, orjson.dumps(again), u.encode(), partition=partition_for(u, P))
            nids.append(again["id"])
    for i in range(4):  # rejected: the reason shows among the top failures
        prod.produce("notify.requests", b'{"v":1,"id":"' + f"{tag}-bad{i}".encode() + b'"}',
                     users[i].encode(), partition=partition_for(users[i], P))
    assert prod.flush(10) == 0
    return nids, users[0]


def receipts_count(stack, tag: str) -> int:
    return int(local_sql(stack.loader_socket, timeout=10, text=(
        f"SELECT count() FROM notiflow.receipts WHERE startsWith(notification_id, '{tag}-')"
    )).rows[0][0])


@pytest.fixture(scope="module")
def run(stack, flows):
    """The published run, once the loader holds its receipts (and they stopped growing)."""
    tag = f"dash{uuid.uuid4().hex[:6]}"
    sandbox = SandboxControl(stack.sandbox_url)
    sandbox.faults("sendgrid", status=400, rate=1, count=2)  # two email batches fail for good
    try:
        nids, user = publish_run(stack, tag)
        deadline, last, stable_since = time.time() + 120, -1, time.time()
        while time.time() < deadline:
            n = receipts_count(stack, tag)
            if n != last:
                last, stable_since = n, time.time()
            elif n >= len(nids) and time.time() - stable_since > 3:
                break
            time.sleep(0.5)
        assert last >= len(nids), f"only {last} receipts for {len(nids)} notifications"
    finally:
        sandbox.clear_faults()
        sandbox.close()
    return {"tag": tag, "nids": nids, "user": user}


def test_dashboard_data_endpoints_need_an_admin_key(stack, gateway, run):
    url = f"{gateway.url}/v1/dashboard/latency"
    r = httpx.get(url, timeout=10)
    assert r.status_code == 401 and "missing API key" in r.text
    producer_key = new_key(stack, "producer", ["social.*"])
    r = httpx.get(url, headers={"Authorization": f"Bearer {producer_key}"}, timeout=10)
    assert r.status_code == 403 and "admin" in r.text
    admin = {"Authorization": f"Bearer {new_key(stack, 'ops', ['admin'])}"}
    r = httpx.get(url, params={"minutes": 0}, headers=admin, timeout=10)
    assert r.status_code == 422 and "minutes" in r.text
    r = httpx.get(f"{gateway.url}/v1/dashboard/users/a%20b/inapp", headers=admin, timeout=10)
    assert r.status_code == 422
    r = httpx.get(f"{gateway.url}/dashboard/static/..%2Fapp.py", timeout=10)
    assert r.status_code == 404
    r = httpx.get(url, headers=admin, timeout=10)
    assert r.status_code == 200
    assert {row["priority"] for row in r.json()["rows"]} >= {"critical", "high", "normal", "low"}


def test_dashboard_says_why_when_the_receipts_store_is_down(stack):
    """The data endpoints over a loader address where nothing listens: 503 with the reason."""
    from fastapi import FastAPI

    from gateway import dashboard
    from gateway.api_keys import KeyStore, make_try_acquire
    from notiflow.config import Settings
    from stack.services import free_port

    key = new_key(stack, "ops", ["admin"])

    async def call() -> list[httpx.Response]:
        app = FastAPI()
        app.include_router(dashboard.router)
        r = aioredis.from_url(stack.redis_url)
        app.state.settings = Settings(stats_url=f"http://127.0.0.1:{free_port()}")
        app.state.redis = r
        app.state.key_store = KeyStore(r, 1.0, 100, 200)
        app.state.try_acquire = make_try_acquire(r)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://gw") as c:
                auth = {"Authorization": f"Bearer {key}"}
                return [await c.get(f"/v1/dashboard/{what}", headers=auth)
                        for what in ("deliveries", "latency", "failures")]
        finally:
            await r.aclose()

    for resp in asyncio.run(call()):
        assert resp.status_code == 503, resp.text
        detail = resp.json()["detail"]
        assert detail["error"] == "unavailable"
        assert "receipts store unreachable" in detail["reason"]


def log_in(page, key: str) -> None:
    """Through the page's form, as an operator does."""
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#key", key)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#main:not([hidden])")


def browser(pw, tmp_path):
    return pw.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900})


def test_dashboard_page_keeps_keys_out_of_urls_and_refuses_a_key_in_one(stack, gateway, tmp_path):
    from playwright.sync_api import sync_playwright

    r = httpx.get(f"{gateway.url}/dashboard", timeout=10)
    assert r.headers["referrer-policy"] == "no-referrer"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp

    key = new_key(stack, "dash-url", ["admin"])
    asked: list[str] = []
    with sync_playwright() as pw:
        ctx = browser(pw, tmp_path)
        try:
            page = ctx.new_page()
            page.on("request", lambda req: asked.append(req.url + str(req.headers)))
            page.goto(f"{gateway.url}/dashboard?key={key}&minutes=15")
            page.wait_for_selector("#login:not([hidden])")
            assert "key=" not in page.url and "minutes=15" in page.url  # wiped at once
            assert "in the URL is refused" in page.inner_text("#login-why")
            assert page.locator("#main").is_hidden()
            assert not [a for a in asked if "/v1/dashboard/" in a]  # the URL's key was not used
            assert page.evaluate("sessionStorage.getItem('notiflow.dashboard.key')") is None
            # a wrong key: back to the form, with the reason, and nothing kept
            page.fill("#key", "not-a-key")
            page.click("#login button[type=submit]")
            page.wait_for_function("() => document.getElementById('login-why').textContent"
                                   ".startsWith('401')")
            assert page.locator("#main").is_hidden()
            assert page.evaluate("sessionStorage.getItem('notiflow.dashboard.key')") is None
        finally:
            ctx.close()


def test_dashboard_refresh_is_whole_seconds_2_to_3600(stack, gateway, tmp_path):
    """?refresh=x once meant setTimeout(NaN): a reload loop as fast as the browser went."""
    from playwright.sync_api import sync_playwright

    key = new_key(stack, "dash-refresh", ["admin"])
    asked: list[str] = []

    def count(req) -> None:
        if "/v1/dashboard/latency" in req.url:
            asked.append(req.url)

    with sync_playwright() as pw:
        ctx = browser(pw, tmp_path)
        try:
            page = ctx.new_page()
            page.on("request", count)
            page.goto(f"{gateway.url}/dashboard?refresh=x")
            log_in(page, key)
            assert page.get_attribute("body", "data-refresh-ms") == "10000"
            page.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('updated')")
            page.wait_for_timeout(1500)  # a rate: what one and a half seconds bring
            assert len(asked) == 1, asked
            got = page.evaluate("""raws => raws.map(refreshMs)""",
                                ["x", "0", "1", "-5", "1e3", "2.5", "3601", "", None, "2",
                                 "3600", "60"])
            assert got == [10_000] * 9 + [2_000, 3_600_000, 60_000]
        finally:
            ctx.close()


def test_dashboard_renders_a_real_run_in_chromium(stack, gateway, run, tmp_path):
    from playwright.sync_api import sync_playwright

    key = new_key(stack, "dashboard", ["admin"])
    user = run["user"]
    rds = redis.Redis.from_url(stack.redis_url)
    errors: list[str] = []
    with sync_playwright() as pw:
        ctx = browser(pw, tmp_path)
        try:
            page = ctx.new_page()
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{gateway.url}/dashboard?user={user}&minutes=15&refresh=2")
            log_in(page, key)
            page.wait_for_function(
                "ids => ids.every(id => Number(document.getElementById(id).dataset.points) > 0)",
                arg=list(CHARTS), timeout=30_000)
            points = {c: int(page.get_attribute(f"#{c}", "data-points")) for c in CHARTS}
            assert all(n > 0 for n in points.values()), points
            assert key not in page.url
            assert page.evaluate("sessionStorage.getItem('notiflow.dashboard.key')") == key
            assert page.evaluate("localStorage.getItem('notiflow.dashboard.key')") is None
            assert page.locator("#problem").is_hidden(), page.inner_text("#problem")
            # each channel that had receipts has its own chart
            titles = page.locator("#chart-deliveries h3").all_inner_texts()
            assert {"push", "email", "sms", "inapp"} <= set(titles), titles
            assert page.locator("#chart-failures rect").count() > 0
            assert page.inner_text("#badge") == str(int(rds.get(f"nf:badge:{user}") or 0))

            # live: a new in-app notification shows up without reloading
            nid = f"{run['tag']}-live"
            prod = Producer({"bootstrap.servers": stack.brokers})
            prod.produce("notify.requests", orjson.dumps({
                "v": 1, "id": nid, "type": "social.comment", "recipients": [user],
                "channels": ["inapp"], "title": "Live one", "body": "fresh",
                "created_at": now_ms()}), user.encode(), partition=partition_for(user, P))
            assert prod.flush(10) == 0
            page.wait_for_function(
                "() => document.querySelector('#inbox li b')?.textContent === 'Live one'",
                timeout=30_000)
            page.wait_for_timeout(500)  # let the chart refresh settle for the screenshot
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            ctx.close()
            rds.close()
    shutil.copyfile(tmp_path / "dashboard.png", SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000
    assert errors == []
