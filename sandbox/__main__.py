"""python -m sandbox --host 127.0.0.1 --port P

One granian worker (RSGI) serves everything on one port: with ``http=auto`` granian answers
HTTP/1.1 and cleartext HTTP/2 with prior knowledge (h2c) side by side, so APNs/FCM clients
multiplex over h2c while the SendGrid/Twilio libraries speak HTTP/1.1. One worker because
the sandbox's state (messages, stats, faults) lives in that process. Prints
``sandbox ready http://host:port`` once the worker answers; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import http.client
import threading
import time

from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops, TaskImpl
from granian.http import HTTP2Settings
from granian.log import LogLevels


def _announce_when_ready(host: str, port: int) -> None:
    def poll() -> None:
        while True:
            try:
                c = http.client.HTTPConnection(host, port, timeout=1)
                c.request("GET", "/_sandbox/health")
                if c.getresponse().status == 200:
                    print(f"sandbox ready http://{host}:{port}", flush=True)
                    return
            except OSError:
                pass
            time.sleep(0.05)

    threading.Thread(target=poll, name="sandbox-ready", daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser(description="Local provider sandbox (APNs, FCM, SendGrid, Twilio)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8600)
    ap.add_argument("--task-impl", default="rust", choices=[x.value for x in TaskImpl],
                    help="rust: granian's own task runner, ~1.3x the req/s of asyncio tasks here "
                         "(Python <= 3.11; granian falls back to asyncio on 3.12+)")
    ap.add_argument("--log-level", default="warning", choices=[x.value for x in LogLevels])
    args = ap.parse_args()
    server = Granian(
        "sandbox.app:app", address=args.host, port=args.port, interface=Interfaces.RSGI,
        http=HTTPModes.auto, workers=1, runtime_threads=1, loop=Loops.asyncio,
        task_impl=TaskImpl(args.task_impl),
        websockets=False, log_access=False, log_level=LogLevels(args.log_level),
        # APNs lets a connection carry ~1000 concurrent streams; granian's default is 200
        http2_settings=HTTP2Settings(max_concurrent_streams=1000),
    )
    server.on_startup(lambda: _announce_when_ready(args.host, args.port))
    server.serve()


if __name__ == "__main__":
    main()
