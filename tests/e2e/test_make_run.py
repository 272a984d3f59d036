"""`make run` itself: the runner starts every part, a notification POSTed to its gateway
reaches an inbox through the real flow, and however the runner ends (Ctrl-C, Ctrl-C after
its output pipe closed, SIGTERM, a closed terminal, kill -9) nothing it started outlives
it.  A flow that dies is restarted, its whole lane, and the lane works again."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import stat
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import httpx

from gateway.user_tokens import create_token
from stack.env import ROOT
from stack.services import port_open


def _runner(workdir: Path, *args: str, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NOTIFLOW_") and k not in ("KAFKA_BROKERS", "REDIS_URL",
                                                         "CLICKHOUSE_URL")}
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.STDOUT)
    return subprocess.Popen([sys.executable, "-m", "stack.run", "--workdir", str(workdir),
                             *args], cwd=ROOT, env=env, **popen)


def _env_file(path: Path, run: subprocess.Popen, timeout: float = 120) -> dict[str, str]:
    deadline = time.time() + timeout
    while time.time() < deadline and run.poll() is None:
        if path.exists():
            lines = path.read_text().splitlines()
            return dict(line.split("=", 1) for line in lines if "=" in line)
        time.sleep(0.2)
    raise AssertionError(f"no {path} after {timeout} s (runner exit status {run.poll()})")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(p))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie holds nothing
    except OSError:
        return True


def _assert_all_gone(pids: list[int], ports: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.1)
    left = {p: _cmdline(p) for p in pids if not _gone(p)}
    assert not left, f"outlived the runner: {left}"
    assert not [p for p in ports if port_open(p)]


def _ports(stack_env: dict[str, str]) -> list[int]:
    urls = [stack_env[k] for k in ("NOTIFLOW_GATEWAY_URL", "REDIS_URL", "KAFKA_BROKERS",
                                   "SANDBOX_URL", "STATS_URL")]
    return [int(u.rsplit(":", 1)[1].split("/")[0]) for u in urls]


def _parts(run: subprocess.Popen, flows: bool) -> list[int]:
    """The runner's processes once all have started: every part, the watchdog, any child."""
    want = ["stack.watchdog", "-m gateway", "-m loader", "-m sandbox", "redis-server", "broker"]
    want += ["dataflows.main", "dataflows.critical", "dataflows.retry"] if flows else []
    deadline = time.monotonic() + 30
    while True:
        pids = _descendants(run.pid)
        cmds = " | ".join(_cmdline(p) for p in pids)
        if all(w in cmds for w in want):
            return pids
        assert time.monotonic() < deadline, f"missing parts of {want} in {cmds}"
        time.sleep(0.1)


def _inbox_has(url: str, user: str, nid: str, headers: dict, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = httpx.get(f"{url}/v1/users/{user}/inbox", headers=headers, timeout=10)
        if got.status_code == 200 and nid in [e["id"] for e in got.json().get("entries", [])]:
            return True
        time.sleep(0.3)
    return False


def test_make_run_serves_a_notification_end_to_end_and_ctrl_c_stops_everything(tmp_path):
    run = _runner(tmp_path, text=True)
    pids, ports = [], []
    try:
        stack_env = _env_file(tmp_path / "stack.env", run)
        # the env file holds secrets: private, and the stack's own token secret is in it
        assert stat.S_IMODE((tmp_path / "stack.env").stat().st_mode) == 0o600
        secret = stack_env["NOTIFLOW_USER_TOKEN_SECRET"]
        assert len(secret.encode()) >= 32
        url, key = stack_env["NOTIFLOW_GATEWAY_URL"], stack_env["GATEWAY_DEV_API_KEY"]
        ports = _ports(stack_env)
        pids = _parts(run, flows=True)
        r = httpx.post(f"{url}/v1/notifications", headers={"Authorization": f"Bearer {key}"},
                       timeout=10, json={
            "type": "social.comment", "recipients": ["make-run-user"], "channels": ["inapp"],
            "title": "Hello", "body": "from make run"})
        assert r.status_code == 202, r.text
        # the user reads it with a token signed by this stack's secret (make user-token's)
        token = create_token("make-run-user", secret.encode(), 300)
        assert _inbox_has(url, "make-run-user", r.json()["id"],
                          {"Authorization": f"Bearer {token}"})
        assert httpx.get(f"{url}/dashboard", timeout=10).status_code == 200
    finally:
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=90)
    assert run.returncode == 0, out
    assert "Dev API key" in out and "stopped." in out
    assert f"{url}/dashboard " in out and key not in out.split("Dashboard:")[1], out
    _assert_all_gone(pids, ports)
    assert not (tmp_path / "stack.env").exists()


def test_ctrl_c_after_the_output_pipe_closed_still_stops_everything(tmp_path):
    # `make run | tee run.log`, then Ctrl-C: tee dies first, the runner's stdout is a
    # closed pipe by the time it tears down
    run = _runner(tmp_path, "--no-flows")
    stack_env = _env_file(tmp_path / "stack.env", run)
    pids, ports = _parts(run, flows=False), _ports(stack_env)
    run.stdout.close()
    run.send_signal(signal.SIGINT)
    assert run.wait(90) == 0
    _assert_all_gone(pids, ports)


def test_sigterm_stops_everything(tmp_path):
    run = _runner(tmp_path, "--no-flows", text=True)
    stack_env = _env_file(tmp_path / "stack.env", run)
    pids, ports = _parts(run, flows=False), _ports(stack_env)
    run.send_signal(signal.SIGTERM)
    out, _ = run.communicate(timeout=90)
    assert run.returncode == 0 and "stopped." in out, out
    _assert_all_gone(pids, ports)


def test_a_closed_terminal_stops_everything(tmp_path):
    # the runner on a terminal of its own (a pty it controls); closing the terminal hangs
    # it up: SIGHUP, and every later write to it fails
    master, slave = os.openpty()
    run = _runner(tmp_path, "--no-flows", stdin=slave, stdout=slave, stderr=slave,
                  start_new_session=True,
                  preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    reading, shown = threading.Event(), bytearray()

    def drain() -> None:  # a terminal shows what it is given; unread, it would block
        while reading.is_set():
            if select.select([master], [], [], 0.1)[0]:
                try:
                    shown.extend(os.read(master, 65536))
                except OSError:
                    return

    reading.set()
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        stack_env = _env_file(tmp_path / "stack.env", run)
        pids, ports = _parts(run, flows=False), _ports(stack_env)
    finally:
        reading.clear()
        reader.join(5)
        os.close(master)  # the terminal window closes
    assert run.wait(90) == 0, shown.decode(errors="replace")
    _assert_all_gone(pids, ports)


def test_a_dead_flow_lane_is_restarted_whole_and_kill_9_of_the_runner_leaves_nothing(tmp_path):
    run = _runner(tmp_path, "--main-processes", "2", text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(run.stdout), daemon=True).start()
    try:
        stack_env = _env_file(tmp_path / "stack.env", run)
        ports = _ports(stack_env)
        before = _parts(run, flows=True)
        main = sorted(p for p in before if "dataflows.main" in _cmdline(p))
        assert len(main) == 2
        os.kill(main[1], signal.SIGKILL)  # one process of the two-process bulk lane crashes
        deadline = time.monotonic() + 60
        while not any("lane main restarted" in x for x in lines):
            assert time.monotonic() < deadline and run.poll() is None, "".join(lines)
            time.sleep(0.1)
        after = _parts(run, flows=True)
        new_main = sorted(p for p in after if "dataflows.main" in _cmdline(p))
        assert len(new_main) == 2 and not set(new_main) & set(main), "".join(lines)
        assert all(_gone(p) for p in main)  # its survivor was stopped: restarted as a whole
        # and the restarted lane delivers
        url, key = stack_env["NOTIFLOW_GATEWAY_URL"], stack_env["GATEWAY_DEV_API_KEY"]
        h = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{url}/v1/notifications", headers=h, timeout=10, json={
            "type": "social.comment", "recipients": ["after-restart"], "channels": ["inapp"],
            "title": "still here"})
        assert r.status_code == 202, r.text
        assert _inbox_has(url, "after-restart", r.json()["id"], h), "".join(lines)
    finally:
        run.kill()  # kill -9: the runner runs no cleanup at all
        run.wait(10)
    _assert_all_gone(before + after, ports)


def test_make_api_key_grants_scopes_audiences_rate_and_burst(tmp_path):
    """`make api-key` passes each of SCOPE and AUDIENCE (space-separated) and RATE, BURST
    to the key it makes; it once took one SCOPE word and had no AUDIENCE or BURST."""
    import json

    from stack.services import start_redis

    redis_svc = start_redis(tmp_path)
    env = {**os.environ, "REDIS_URL": redis_svc.url}
    try:
        r = subprocess.run(["make", "-s", "api-key", "NAME=make-key", "SCOPE=social.* admin",
                            "AUDIENCE=topic:sports followers:*", "RATE=5", "BURST=7"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip(), r.stdout + r.stderr
        listed = subprocess.run([sys.executable, "-m", "gateway.api_keys", "list"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=60)
        [key] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert key["name"] == "make-key", key
        assert sorted(key["scopes"]) == ["admin", "social.*"], key
        assert sorted(key["audiences"]) == ["followers:*", "topic:sports"], key
        assert (key["rate"], key["burst"]) == (5, 7), key
        usage = subprocess.run(["make", "-s", "api-key"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
        assert usage.returncode == 2
        assert all(w in usage.stderr for w in ("AUDIENCE=", "BURST=", "RATE=notifications/s"))
    finally:
        redis_svc.stop()
