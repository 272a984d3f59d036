"""The runner's own logic without a stack: the restart policy (a fake clock), the
supervisor's decisions (fake parts), the watchdog, the env file's mode, the chDB holder
check, and that the gateway does not import the runner."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notiflow.local_stack import ROOT
from stack.env import Stack
from stack.restarts import RestartPolicy
from stack.run import Supervisor
from stack.services import folder_holders


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_restart_policy_backs_off_doubling_up_to_a_cap():
    clock = Clock()
    p = RestartPolicy(max_restarts=10, window_s=300, first_delay_s=1, max_delay_s=8, clock=clock)
    delays = []
    for _ in range(6):
        delays.append(p.died())
        clock.t += 1
    assert delays == [1, 2, 4, 8, 8, 8]


def test_restart_policy_gives_up_past_the_limit_within_the_window():
    clock = Clock()
    p = RestartPolicy(max_restarts=3, window_s=60, clock=clock)
    assert [p.died() for _ in range(3)] == [1, 2, 4]
    assert p.died() is None  # a fourth death within a minute: crash-looping
    assert p.recent_deaths() == 4


def test_restart_policy_forgets_deaths_older_than_the_window():
    clock = Clock()
    p = RestartPolicy(max_restarts=2, window_s=60, clock=clock)
    assert p.died() == 1
    assert p.died() == 2
    clock.t += 61  # both deaths are old now: a fresh start, backoff too
    assert p.recent_deaths() == 0
    assert p.died() == 1
    assert p.died() == 2
    assert p.died() is None


def test_restart_policy_refuses_nonsense():
    with pytest.raises(ValueError):
        RestartPolicy(window_s=0)
    with pytest.raises(ValueError):
        RestartPolicy(first_delay_s=10, max_delay_s=1)


class FakePart:
    def __init__(self, name: str, lane: str = "") -> None:
        self.name, self.lane = name, lane
        self.alive, self.returncode, self.stopped = True, None, False
        self.log_path = Path("/dev/null")
        self.pid = 1

    def log_tail(self) -> str:
        return "last words"

    def die(self, rc: int = -9) -> None:
        self.alive, self.returncode = False, rc

    def stop(self) -> None:
        self.alive, self.stopped = False, True


class FakeStack(Stack):
    """A Stack whose lanes start fake parts (stop_lane and lane are the real ones)."""

    def __init__(self, lanes: dict[str, int]) -> None:
        super().__init__(brokers="", redis_url="")
        self.lanes = {lane: {"processes": n} for lane, n in lanes.items()}
        self.starts: list[str] = []
        self.services = [FakePart("redis")]
        for lane in lanes:
            self.start_lane(lane)

    def start_lane(self, lane: str) -> list:
        self.starts.append(lane)
        new = [FakePart(f"flow-{lane}-{i}", lane) for i in range(self.lanes[lane]["processes"])]
        self.services += new
        return new


def test_supervisor_restarts_a_dead_lane_whole_after_the_backoff():
    clock = Clock()
    st = FakeStack({"main": 2, "critical": 1})
    sup = Supervisor(st, lambda: RestartPolicy(first_delay_s=1, clock=clock), clock=clock)
    old = st.lane("main")
    assert sup.check() is None and st.starts == ["main", "critical"]
    old[1].die()
    assert sup.check() is None
    assert old[0].stopped  # its live sibling is stopped too: a cluster restarts as a whole
    assert st.lane("main") == []  # nothing of it runs during the backoff
    clock.t += 0.5
    assert sup.check() is None and st.starts == ["main", "critical"]
    clock.t += 0.5
    assert sup.check() is None
    assert st.starts == ["main", "critical", "main"]
    assert len(st.lane("main")) == 2 and all(p.alive for p in st.lane("main"))
    assert st.lane("critical")[0].alive  # other lanes untouched


def test_supervisor_stops_the_run_when_a_lane_keeps_dying():
    clock = Clock()
    st = FakeStack({"retry": 1})
    sup = Supervisor(st, lambda: RestartPolicy(max_restarts=2, first_delay_s=0, clock=clock),
                     clock=clock)
    for _ in range(2):
        st.lane("retry")[0].die(1)
        assert sup.check() is None  # stopped, due at once
        assert sup.check() is None  # restarted
        assert st.lane("retry")[0].alive
    st.lane("retry")[0].die(1)
    assert sup.check() == 1


def test_supervisor_stops_the_run_when_another_part_dies():
    clock = Clock()
    st = FakeStack({"main": 1})
    sup = Supervisor(st, lambda: RestartPolicy(clock=clock), clock=clock)
    st.service("redis").die(0)
    assert sup.check() == 1
    assert st.starts == ["main"]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait(cond, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_watchdog_kills_listed_groups_with_their_children_when_its_starter_is_gone():
    # a group whose leader ignores SIGTERM and has a child: SIGKILL must follow the grace
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
            "print(c.pid, flush=True); time.sleep(600)")
    kept = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            start_new_session=True)
    leader = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                              stdout=subprocess.PIPE, text=True)
    child = int(leader.stdout.readline())
    dog = subprocess.Popen([sys.executable, "-c",
                            "import stack.watchdog as w; w.GRACE_S = 0.5; w.main()"],
                           stdin=subprocess.PIPE, cwd=ROOT, start_new_session=True)
    try:
        dog.stdin.write(f"+ {leader.pid}\n+ {kept.pid}\n- {kept.pid}\n".encode())
        dog.stdin.flush()
        time.sleep(0.3)
        assert not _gone(leader.pid) and not _gone(child)  # nothing happens while we live
        dog.stdin.close()  # what the starter's death looks like to it
        assert dog.wait(10) == 0
        leader.wait(10)
        assert _wait(lambda: _gone(child))
        assert kept.poll() is None  # taken off its list: not its business any more
    finally:
        for p in (kept, leader, dog):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def test_env_file_is_private_from_its_creation(tmp_path):
    old = os.umask(0)  # the most permissive umask: the mode must not depend on it
    try:
        s = Stack(brokers="b", redis_url="r", workdir=tmp_path, user_token_secret="s" * 43,
                  dev_api_key="nfk_x")
        path = s.write_env_file()
        s.write_env_file()  # rewritten over an existing file: still private
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert "NOTIFLOW_USER_TOKEN_SECRET=" + "s" * 43 in lines
    assert "GATEWAY_DEV_API_KEY=nfk_x" in lines


def test_folder_holders_names_the_process_holding_a_chdb_folder(tmp_path):
    folder = tmp_path / "chdb"
    assert folder_holders(folder) == {}
    code = (f"from chdb import session; s = session.Session({str(folder)!r}); s.query('SELECT 1');"
            "print('open', flush=True); import time; time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        held = folder_holders(folder)
        assert list(held) == [holder.pid]
        assert "chdb" in held[holder.pid]
    finally:
        holder.kill()
        holder.wait(10)
    assert folder_holders(folder) == {}


def test_start_stack_refuses_a_held_chdb_folder_before_starting_anything(tmp_path, monkeypatch):
    from stack import env

    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    (tmp_path / "chdb").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                               f"f = open({str(tmp_path / 'chdb' / 'status')!r}, 'w');"
                               "print('open', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    started = []
    monkeypatch.setattr(env, "start_kafka", lambda *a, **k: started.append("kafka"))
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(RuntimeError, match=f"in use by pid {holder.pid} "):
            env.start_stack(workdir=tmp_path, with_flows=False)
    finally:
        holder.kill()
        holder.wait(10)
    assert started == []


def test_gateway_never_imports_the_runner():
    code = ("import sys, gateway.api_keys, gateway.user_tokens, gateway.app; "
            "gateway.api_keys._redis_url(); gateway.user_tokens.cli_settings(); "
            "print(sorted(m for m in sys.modules if m == 'stack' or m.startswith('stack.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "REDIS_URL": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_stop_with_a_dev_key_whose_redis_is_already_gone_stops_quietly(tmp_path):
    from stack.services import free_port

    st = Stack(brokers="", redis_url=f"redis://127.0.0.1:{free_port()}/0", workdir=tmp_path,
               dev_api_key="nfk_" + "x" * 40)
    st.stop()  # nobody listens there: the key went with its Redis, nothing to report
    assert st.dev_api_key == ""
