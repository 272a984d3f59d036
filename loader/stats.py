"""``make stats``: receipts by channel and outcome, and latency per priority, as rich tables.

It asks the loader for its named queries (the loader owns the chDB folder, so nothing else
may open it), with the loader's token. The address and token come from ``--url``, the
environment, or var/stack.env (written by the stack runner); see loader/client.py.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from loader.client import Loader, LoaderError, Result


def outcome_table(result: Result) -> Table:
    """Pivot (channel, outcome, receipts) rows: one line per channel, one column per outcome."""
    counts: dict[str, dict[str, int]] = {}
    outcomes: list[str] = []
    for channel, outcome, n in result.rows:
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


def rows_table(title: str, result: Result) -> Table:
    """A plain table of a query result, first column as the label."""
    table = Table(title=title)
    for i, col in enumerate(result.columns):
        table.add_column(
            col, justify="left" if i == 0 else "right", style="bold" if i == 0 else None
        )
    for row in result.rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int | float) else str(v) for v in row))
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loader.stats", description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="loader endpoint, e.g. http://127.0.0.1:8123")
    args = ap.parse_args(argv)
    loader = Loader.from_env(args.url)
    url = loader.url
    console = Console()
    try:
        by_outcome = loader.run("by_channel_outcome")
        latency = loader.run("latency_by_priority")
        failures = loader.run("top_failure_reasons")
    except LoaderError as exc:
        console.print(f"[red]cannot read receipts from {url}: {exc}[/red]")
        console.print("is the loader running? (`make run` starts it; or pass --url)")
        return 1
    console.print(f"[dim]receipts from {url}[/dim]")
    console.print(outcome_table(by_outcome))
    console.print(rows_table("Latency of sent receipts by priority (created -> sent, ms)", latency))
    if failures.rows:
        console.print(rows_table("Top failure reasons", failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
