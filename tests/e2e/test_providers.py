"""The provider modules with the real clients (libcurl, httpx, sendgrid, twilio) against
the provider sandbox: what reaches the provider, and how each answer is classified."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from notiflow.config import Settings
from sandbox.client import SandboxControl
from schemas.task import DeliveryTask
from sinks import apns, email_sendgrid, fcm, sms_twilio
from sinks.push_transport import CurlTransport, HttpxTransport

ROOT = Path(__file__).resolve().parents[2]
TRANSPORTS = {"curl": CurlTransport, "httpx": HttpxTransport}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sandbox_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        ready = threading.Event()

        def watch() -> None:
            for line in proc.stdout:  # drained until exit: the pipe never fills up
                if line.startswith("sandbox ready"):
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        assert ready.wait(30), "sandbox did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def sb(sandbox_url):
    with SandboxControl(sandbox_url) as c:
        c.reset()
        yield c


@pytest.fixture
def cfg(sandbox_url) -> Settings:
    return Settings(apns_url=sandbox_url, fcm_url=sandbox_url, sendgrid_url=sandbox_url,
                    twilio_url=sandbox_url, push_timeout_s=5, failover_timeout_s=5)


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request, cfg):
    t = TRANSPORTS[request.param](cfg.push_timeout_s)
    yield t
    t.close()


def task(provider: str, address: str, nid: str, **kw) -> DeliveryTask:
    channel = {"apns": "push", "fcm": "push", "sendgrid": "email", "twilio": "sms"}[provider]
    base = dict(notification_id=nid, user_id="u1", type="social.like", priority="high",
                channel=channel, provider=provider, target_id=f"t-{nid}", address=address,
                title="T", body="B", template=None, data={"k": 1}, collapse_key="c1",
                created_ms=int(time.time() * 1000))
    base.update(kw)
    return DeliveryTask(**base)


def by_nid(sb: SandboxControl, provider: str) -> dict[str, dict]:
    return {m["nid"]: m for m in sb.messages(provider)}


# --- push -------------------------------------------------------------------------------
def test_apns_send_classifies_good_bad_and_gone_tokens(sb, cfg, transport):
    tasks = [task("apns", "ab" * 32, "a1"), task("apns", "bad-tok", "a2"),
             task("apns", "gone-tok", "a3")]
    got = apns.send(transport, tasks, cfg)
    assert [r.status for r in got] == ["sent", "invalid_target", "invalid_target"]
    assert got[0].provider_ref == apns.apns_id(tasks[0])  # the sandbox echoes our apns-id
    assert "BadDeviceToken" in got[1].reason and "Unregistered" in got[2].reason
    seen = by_nid(sb, "apns")
    assert set(seen) == {"a1"} and seen["a1"]["priority"] == "10"
    assert seen["a1"]["collapse_id"] == "c1"


def test_fcm_send_classifies_good_bad_and_gone_tokens(sb, cfg, transport):
    tasks = [task("fcm", "tok-ok", "f1"), task("fcm", "bad-tok", "f2"),
             task("fcm", "gone-tok", "f3")]
    got = fcm.send(transport, tasks, cfg)
    assert [r.status for r in got] == ["sent", "failed", "invalid_target"]
    assert got[0].provider_ref.startswith("projects/notiflow-local/messages/")
    assert "INVALID_ARGUMENT" in got[1].reason and "UNREGISTERED" in got[2].reason
    assert set(by_nid(sb, "fcm")) == {"f1"}


def test_apns_send_batch_larger_than_stream_cap_all_arrive(sb, cfg):
    t = CurlTransport(cfg.push_timeout_s, max_streams=50)
    try:
        tasks = [task("apns", f"{i:064x}", f"b{i}") for i in range(260)]
        for _ in range(2):  # the second batch reuses the easy handles and the connection
            assert {r.status for r in apns.send(t, tasks, cfg)} == {"sent"}
        assert len(t._free) == 50  # every easy handle is back, none made beyond the window
    finally:
        t.close()
    assert len(sb.messages("apns")) == 520 and set(by_nid(sb, "apns")) == {f"b{i}" for i in range(260)}


def test_apns_send_retries_only_injected_failures_honouring_retry_after(sb, cfg, transport):
    sb.faults("apns", status=503, rate=1, count=2, retry_after=7)
    got = apns.send(transport, [task("apns", f"{i:064x}", f"r{i}") for i in range(5)], cfg)
    retry = [r for r in got if r.status == "retry"]
    assert len(retry) == 2 and {r.retry_after for r in retry} == {7.0}
    assert all("503" in r.reason for r in retry)
    assert len(by_nid(sb, "apns")) == 3


def test_fcm_quota_exceeded_waits_at_least_a_minute(sb, cfg, transport):
    sb.faults("fcm", status=429, rate=1, count=1)
    r = fcm.send(transport, [task("fcm", "tok", "q1")], cfg)[0]
    assert (r.status, r.retry_after) == ("retry", 60.0) and "QUOTA_EXCEEDED" in r.reason


def test_push_send_timeout_is_retry(sb, cfg):
    sb.faults("apns", latency_ms=3000)
    for make in TRANSPORTS.values():
        t = make(0.5)
        try:
            r = apns.send(t, [task("apns", "ab" * 32, "slow")], cfg)[0]
        finally:
            t.close()
        assert r.status == "retry" and "connection" in r.reason


@pytest.mark.parametrize("name", sorted(TRANSPORTS))
def test_push_send_connection_refused_is_retry_and_transport_recovers(sb, cfg, name):
    t = TRANSPORTS[name](2.0)
    try:
        dead = Settings(apns_url=f"http://127.0.0.1:{free_port()}")
        got = apns.send(t, [task("apns", "ab" * 32, f"x{i}") for i in range(3)], dead)
        assert {r.status for r in got} == {"retry"}
        assert apns.send(t, [task("apns", "ab" * 32, "after")], cfg)[0].status == "sent"
    finally:
        t.close()


# --- email ------------------------------------------------------------------------------
def test_sendgrid_send_batches_personalizations_with_nid(sb, cfg):
    client = email_sendgrid.make_client(cfg)
    tasks = [task("sendgrid", f"u{i}@x.io", f"e{i}") for i in range(1200)]
    tasks.append(task("sendgrid", "t@x.io", "tmpl", template="d-123"))
    got = email_sendgrid.send(client, tasks, cfg)
    assert [r.task for r in got] == tasks and {r.status for r in got} == {"sent"}
    seen = by_nid(sb, "sendgrid")
    assert len(seen) == 1201 and seen["e7"]["target"] == "u7@x.io"
    assert sb.stats()["sendgrid"]["by_status"] == {"202": 3}  # 1000 + 200 + 1 template


def test_sendgrid_429_retries_after_ratelimit_reset(sb, cfg):
    sb.faults("sendgrid", status=429, rate=1, count=1, retry_after=20)
    got = email_sendgrid.send(email_sendgrid.make_client(cfg),
                              [task("sendgrid", "a@x.io", "s1"), task("sendgrid", "b@x.io", "s2")],
                              cfg)
    assert {r.status for r in got} == {"retry"}
    assert all(15 <= r.retry_after <= 21 for r in got)


def test_sendgrid_one_failing_group_does_not_touch_the_others(sb, cfg):
    sb.faults("sendgrid", status=503, rate=1, count=1)
    tasks = [task("sendgrid", "a@x.io", "g1"), task("sendgrid", "b@x.io", "g2", body="other")]
    got = email_sendgrid.send(email_sendgrid.make_client(cfg), tasks, cfg)
    assert sorted(r.status for r in got) == ["retry", "sent"]


def test_sendgrid_bad_key_is_failed(sb, cfg):
    bad = Settings(sendgrid_url=cfg.sendgrid_url, sendgrid_api_key="not-a-key")
    r = email_sendgrid.send(email_sendgrid.make_client(bad), [task("sendgrid", "a@x.io", "k")],
                            bad)[0]
    assert r.status == "failed" and r.reason.startswith("sendgrid 401")


def test_sendgrid_connection_refused_is_retry(cfg):
    dead = Settings(sendgrid_url=f"http://127.0.0.1:{free_port()}", failover_timeout_s=2)
    r = email_sendgrid.send(email_sendgrid.make_client(dead), [task("sendgrid", "a@x.io", "c")],
                            dead)[0]
    assert r.status == "retry" and "connection" in r.reason


# --- sms --------------------------------------------------------------------------------
def test_twilio_send_classifies_magic_numbers_and_carries_nid(sb, cfg):
    client = sms_twilio.make_client(cfg)
    tasks = [task("twilio", "+15551234567", "m1"), task("twilio", "+15005550001", "m2"),
             task("twilio", "+15005550004", "m3"), task("twilio", "+15005550009", "m4"),
             task("twilio", "+15557654321", "m5")]
    got = sms_twilio.send(client, tasks, cfg)
    assert [r.status for r in got] == ["sent", "failed", "unsubscribed", "failed", "sent"]
    assert got[0].provider_ref.startswith("SM") and "21211" in got[1].reason
    assert set(by_nid(sb, "twilio")) == {"m1", "m5"}


@pytest.mark.parametrize("status", [429, 503])
def test_twilio_injected_fault_is_retry_and_others_still_go(sb, cfg, status):
    sb.faults("twilio", status=status, rate=1, count=1)
    got = sms_twilio.send(sms_twilio.make_client(cfg),
                          [task("twilio", "+15551234567", "z1"), task("twilio", "+15551234568", "z2")],
                          cfg)
    assert [r.status for r in got] == ["retry", "sent"]


def test_twilio_connection_refused_is_retry(cfg):
    dead = Settings(twilio_url=f"http://127.0.0.1:{free_port()}", failover_timeout_s=2)
    got = sms_twilio.send(sms_twilio.make_client(dead),
                          [task("twilio", "+15551234567", "d1"), task("twilio", "+15551234568", "d2")],
                          dead)
    assert [r.status for r in got] == ["retry", "retry"]
