"""`make run` itself: the runner starts every part, a notification POSTed to its gateway
reaches an inbox through the real flow, and Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from stack.env import ROOT
from stack.services import port_open


def _env_file(path: Path, timeout: float) -> dict[str, str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            env = dict(line.split("=", 1) for line in lines if "=" in line)
            if "GATEWAY_DEV_API_KEY" in env:
                return env
        time.sleep(0.3)
    raise AssertionError(f"no {path} after {timeout} s")


def test_make_run_serves_a_notification_end_to_end_and_ctrl_c_stops_everything(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NOTIFLOW_") and k not in ("KAFKA_BROKERS", "REDIS_URL",
                                                         "CLICKHOUSE_URL")}
    run = subprocess.Popen([sys.executable, "-m", "stack.run", "--workdir", str(tmp_path)],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    ports: list[int] = []
    try:
        stack_env = _env_file(tmp_path / "stack.env", 120)
        url, key = stack_env["NOTIFLOW_GATEWAY_URL"], stack_env["GATEWAY_DEV_API_KEY"]
        ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in
                 (url, stack_env["REDIS_URL"], stack_env["KAFKA_BROKERS"])]
        h = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{url}/v1/notifications", headers=h, timeout=10, json={
            "type": "social.comment", "recipients": ["make-run-user"], "channels": ["inapp"],
            "title": "Hello", "body": "from make run"})
        assert r.status_code == 202, r.text
        nid = r.json()["id"]
        deadline, ids = time.time() + 60, []
        while time.time() < deadline and nid not in ids:
            got = httpx.get(f"{url}/v1/users/make-run-user/inbox", headers=h, timeout=10)
            ids = [e["id"] for e in got.json().get("entries", [])] if got.status_code == 200 else []
            time.sleep(0.3)
        assert nid in ids, got.text
        assert httpx.get(f"{url}/dashboard", timeout=10).status_code == 200
    finally:
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=90)
    assert run.returncode == 0, out
    assert "Dev API key" in out and "stopped." in out
    assert not [p for p in ports if port_open(p)], out  # everything it started is gone
    assert not (tmp_path / "stack.env").exists()
