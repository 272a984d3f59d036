"""``python -m gateway [--host H] [--port P]``: the gateway on uvicorn (uvloop, httptools).

One process; run several behind a load balancer for more (each needs its own spool
directory, ``NOTIFLOW_GATEWAY_SPOOL_DIR``: a second one on a folder in use refuses to
start).  It refuses to start without a safe ``NOTIFLOW_USER_TOKEN_SECRET`` (exit 1, the
reason on stderr).  Logs are JSON lines on stderr.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from gateway.app import InsecureSettings, create_app, refuse_insecure
from notiflow.config import get_settings
from notiflow.logs import configure


def main(argv: list[str] | None = None) -> None:
    cfg = get_settings()
    ap = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    ap.add_argument("--host", default=cfg.gateway_host)
    ap.add_argument("--port", type=int, default=cfg.gateway_port)
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    try:
        refuse_insecure(cfg)
    except InsecureSettings as e:
        sys.exit(f"error: {e}")  # exit status 1, the reason on stderr, nothing started
    configure(args.log_level.upper())
    uvicorn.run(create_app(cfg), host=args.host, port=args.port, log_config=None,
                access_log=False, log_level=args.log_level, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
