"""Deliveries per second over time, per channel, from the receipts in ClickHouse.

Why from ClickHouse: the receipts are what an operator sees too (`make stats`, the
dashboard), so the plot shows the same truth, read through the loader's local raw-SQL
socket (``python -m loader.sql``'s path).  A bench phase calls ``fetch`` before its stack stops (each phase has its own
stack) and keeps the series; ``save`` draws one panel per phase into one PNG
(docs/bench-deliveries.png).  Agg backend: no display needed.

    python -m bench.plot [--socket PATH] [--where SQL] [--out docs/bench-deliveries.png]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from loader.client import Loader, local_sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "bench-deliveries.png"
DELIVERED = ("sent", "delivered")


@dataclass
class Panel:
    """One phase's series: channel -> [(seconds since the phase's first second, count)]."""

    title: str
    series: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


def fetch(socket: str, title: str, where: str = "1") -> Panel:
    """Delivered receipts per second and channel (``where`` narrows them, e.g. to a run's ids)."""
    outcomes = ",".join(f"'{o}'" for o in DELIVERED)
    sql = (f"SELECT toUnixTimestamp(toStartOfSecond(event_at)) AS s, channel, count() "
           f"FROM notiflow.receipts WHERE outcome IN ({outcomes}) AND ({where}) "
           f"GROUP BY s, channel ORDER BY s")
    rows = local_sql(socket, sql, timeout=60).rows
    panel = Panel(title)
    if not rows:
        return panel
    t0 = min(int(s) for s, _c, _n in rows)
    for s, channel, n in rows:
        panel.series.setdefault(channel, []).append((int(s) - t0, int(n)))
    return panel


def save(panels: list[Panel], out: Path = DEFAULT_OUT) -> Path:
    """One stacked subplot per panel; a channel keeps its colour across panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in panels if p.series] or panels[:1]
    colours = {"inapp": "tab:blue", "push": "tab:orange", "email": "tab:green", "sms": "tab:red"}
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        for channel, pts in sorted(panel.series.items()):
            full = dict(pts)  # seconds with no delivery are zeros, not gaps bridged by a line
            xs = list(range(max(full) + 1))
            ax.plot(xs, [full.get(x, 0) for x in xs], label=channel, lw=1.2,
                    color=colours.get(channel))
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel("deliveries / s")
        ax.grid(alpha=0.3)
        if panel.series:
            ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since the phase's first delivery")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--socket", help="the loader's socket (default: NOTIFLOW_LOADER_SOCKET)")
    ap.add_argument("--where", default="1", help="SQL condition on notiflow.receipts")
    ap.add_argument("--title", default="deliveries per second by channel")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    socket = args.socket or Loader.from_env().socket
    print(save([fetch(socket, args.title, args.where)], args.out))


if __name__ == "__main__":
    main()
