"""python -m sandbox --host 127.0.0.1 --port P

One granian worker (RSGI): HTTP/1.1 and cleartext HTTP/2 (prior knowledge) on one port,
so APNs/FCM clients multiplex over h2c and SendGrid/Twilio's libraries use HTTP/1.1.
"""

from __future__ import annotations

import argparse

from granian import Granian
from granian.constants import HTTPModes, Interfaces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8600)
    args = ap.parse_args()
    print(f"sandbox ready http://{args.host}:{args.port}", flush=True)
    Granian("sandbox.app:app", address=args.host, port=args.port, interface=Interfaces.RSGI,
            http=HTTPModes.auto, workers=1, websockets=False, log_access=False).serve()


if __name__ == "__main__":
    main()
