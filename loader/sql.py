"""``python -m loader.sql "SELECT ..."`` (or SQL on stdin): an analyst's raw read-only SQL, locally.

chDB lives inside the loader process, and a second process cannot open its folder, so the
SQL goes to the running loader through its unix socket (``NOTIFLOW_LOADER_SOCKET``, from the
environment or var/stack.env; mode 0600, so only the user who runs the stack reaches it).
Nothing on the network takes SQL text; on a ClickHouse server, analysts use
``clickhouse-client`` with a read-only user instead (docs/analytics.md).
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

from loader.client import Loader, LoaderError
from loader.stats import rows_table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loader.sql", description=__doc__.splitlines()[0])
    ap.add_argument("sql", nargs="?", help="the query; read from stdin when absent")
    ap.add_argument("--json", action="store_true", help="print {columns, rows} as JSON")
    ap.add_argument("--socket", help="the loader's unix socket (default: from the environment)")
    args = ap.parse_args(argv)
    text = args.sql if args.sql is not None else sys.stdin.read()
    loader = Loader("", "", args.socket) if args.socket else Loader.from_env()
    try:
        res = loader.sql(text)
    except LoaderError as exc:
        print(f"loader.sql: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"columns": res.columns, "rows": res.rows}, default=str))
    else:
        Console().print(rows_table(f"{len(res.rows)} rows", res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
