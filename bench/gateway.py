"""Gateway load: single POST /v1/notifications (acks=all before each 202) under wrk.

Why wrk: a Python client (httpx) spends ~700 us of CPU a request and saturates before
the gateway does, so it measures itself.  wrk is Debian's package (``apt-get install
wrk``); without it this phase says so and is skipped.

    python -m bench.gateway [--connections 32,512] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

LUA = """wrk.method = "POST"
wrk.body = '{"type": "social.like", "recipients": ["u1"], "body": "hi"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
"""


def run(connections: list[int], seconds: int) -> list[dict]:
    if shutil.which("wrk") is None:
        print("gateway: wrk not found (apt-get install wrk); skipped")
        return []
    # the dev key's own limit would answer 429s: this measures the gateway, not the limit
    os.environ["NOTIFLOW_GATEWAY_DEFAULT_RATE"] = "1000000"
    os.environ["NOTIFLOW_GATEWAY_DEFAULT_BURST"] = "1000000"
    from stack.env import start_stack

    work = Path(tempfile.mkdtemp(prefix="nf-bench-gw-"))
    script = work / "post.lua"
    script.write_text(LUA)
    st = start_stack(workdir=work, with_flows=False, with_gateway=True)
    rows = []

    def wrk(c: int, secs: int) -> str:
        return subprocess.run(
            ["wrk", "-t1", f"-c{c}", f"-d{secs}s", "--latency", "-s", str(script),
             f"{st.gateway_url}/v1/notifications"],
            capture_output=True, text=True, env={**os.environ, "KEY": st.dev_api_key},
            check=True).stdout

    try:
        # the first request waits ~0.9 s for the producer's metadata and producer id: in
        # a 5 s run at c=1 that one request alone made the p99 (wrk's histogram)
        wrk(1, 1)
        for c in connections:
            out = wrk(c, seconds)
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            p50 = re.search(r"50%\s+(\S+)", out).group(1)
            p99 = re.search(r"99%\s+(\S+)", out).group(1)
            bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            rows.append({"connections": c, "req_s": rps, "p50": p50, "p99": p99,
                         "non_2xx": int(bad.group(1)) if bad else 0})
            print(f"gateway c={c}: {rps:,.0f} req/s p50 {p50} p99 {p99} "
                  f"non-2xx {rows[-1]['non_2xx']}")
    finally:
        st.stop()
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--connections", default="1,32,512")
    ap.add_argument("--seconds", type=int, default=5)
    a = ap.parse_args()
    run([int(c) for c in a.connections.split(",")], a.seconds)


if __name__ == "__main__":
    main()
