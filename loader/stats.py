"""``make stats``: receipts by channel and outcome, and latency per priority, as rich tables.

It reads through the loader's SQL endpoint (the loader owns the chDB folder, so nothing else
may open it). The URL is ``--url``, else ``STATS_URL=`` in var/stack.env (written by the
stack runner), else ``settings.stats_url``.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from loader import queries
from notiflow.config import get_settings

_ROOT = Path(__file__).resolve().parents[1]


def resolve_url(explicit: str | None = None) -> str:
    """The endpoint: explicit, else var/stack.env's STATS_URL, else the settings default."""
    if explicit:
        return explicit.rstrip("/")
    for env_file in (Path.cwd() / "var" / "stack.env", _ROOT / "var" / "stack.env"):
        if env_file.is_file():
            for line in env_file.read_text().splitlines():
                key, _, value = line.strip().partition("=")
                if key.removeprefix("export ").strip() == "STATS_URL" and value.strip():
                    return value.strip().strip("'\"").rstrip("/")
    return get_settings().stats_url.rstrip("/")


def fetch(url: str, sql: str, timeout: float = 30.0) -> dict:
    """POST ``sql`` to ``url``/query; returns {"columns": [...], "rows": [...]}."""
    req = urllib.request.Request(f"{url}/query", data=sql.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise RuntimeError(f"query refused ({exc.code}): {detail}") from exc


def outcome_table(result: dict) -> Table:
    """Pivot (channel, outcome, receipts) rows: one line per channel, one column per outcome."""
    counts: dict[str, dict[str, int]] = {}
    outcomes: list[str] = []
    for channel, outcome, n in result["rows"]:
        counts.setdefault(channel, {})[outcome] = int(n)
        if outcome not in outcomes:
            outcomes.append(outcome)
    preferred = ["sent", "suppressed", "duplicate", "rejected", "failed", "no_target", "expired"]
    outcomes.sort(key=lambda o: (preferred.index(o) if o in preferred else len(preferred), o))
    table = Table(title="Receipts by channel and outcome")
    table.add_column("channel", style="bold")
    for o in outcomes:
        table.add_column(o, justify="right", style="green" if o == "sent" else None)
    table.add_column("total", justify="right", style="bold")
    totals = dict.fromkeys(outcomes, 0)
    for channel, row in counts.items():
        for o in outcomes:
            totals[o] += row.get(o, 0)
        table.add_row(channel, *(f"{row.get(o, 0):,}" for o in outcomes), f"{sum(row.values()):,}")
    if counts:
        table.add_section()
        table.add_row("all", *(f"{totals[o]:,}" for o in outcomes), f"{sum(totals.values()):,}")
    return table


def rows_table(title: str, result: dict) -> Table:
    """A plain table of a query result, first column as the label."""
    table = Table(title=title)
    for i, col in enumerate(result["columns"]):
        table.add_column(
            col, justify="left" if i == 0 else "right", style="bold" if i == 0 else None
        )
    for row in result["rows"]:
        table.add_row(*(f"{v:,}" if isinstance(v, int | float) else str(v) for v in row))
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loader.stats", description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="loader endpoint, e.g. http://127.0.0.1:8123")
    args = ap.parse_args(argv)
    url = resolve_url(args.url)
    console = Console()
    try:
        by_outcome = fetch(url, queries.BY_CHANNEL_OUTCOME)
        latency = fetch(url, queries.LATENCY_BY_PRIORITY)
        failures = fetch(url, queries.TOP_FAILURE_REASONS)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        console.print(f"[red]cannot read receipts from {url}: {exc}[/red]")
        console.print("is the loader running? (`make run` starts it; or pass --url)")
        return 1
    console.print(f"[dim]receipts from {url}[/dim]")
    console.print(outcome_table(by_outcome))
    console.print(rows_table("Latency of sent receipts by priority (created -> sent, ms)", latency))
    if failures["rows"]:
        console.print(rows_table("Top failure reasons", failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
