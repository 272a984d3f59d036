"""A 1M-recipient fan-out: time to expand, time to deliver, critical p99 while it drains.

What it does, on a stack of its own: publishes ``followers`` follow subscriptions of one
user (notify.subscriptions, one producer, big batches) and presence for ``active`` of them,
users with a push device for the critical lane, then starts the main, critical and retry
flows and waits until every partition has bootstrapped (a probe request per partition).
Then one followers-audience request with ``hybrid: false`` (every follower gets an in-app
entry now: "deliver" = ``followers`` inbox writes), and, if ``active`` > 0, a second one
with ``hybrid: true`` (only the active share is routed now, the rest get the one
pull-on-read entry).  All the while, critical push requests go to notify.critical at a
steady ``critical_rate``; their p99 (receipt ``event_ms - created_ms``) is the priority
lane's figure.

Expand = audience request published -> every partition's ``expanded`` counter in Redis
``nf:fanout:{id}`` adds up to the audience.  Deliver = published -> the last of the
``sent`` receipts in ClickHouse (``event_ms``).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from pathlib import Path

import orjson
import redis
from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from bench.plot import Panel, fetch
from bench.workload import load_users, make_producer, produce, user_id
from loader.client import LoaderError, local_sql
from notiflow.topics import partition_for

ROOT = Path(__file__).resolve().parent.parent
STAR = "star00000001"  # the followed user
COUNTERS = ("expanded", "routed_now", "deferred", "done")  # "done": partitions finished
CRITICAL_USERS = 200
console = Console()


def q(socket: str, sql: str) -> list[list]:
    """Rows of ``sql`` through the loader's local raw-SQL socket."""
    return local_sql(socket, sql, timeout=60).rows


def follower(i: int) -> str:
    return f"fan{i:08d}"


def load_audience(prod: Producer, followers: int, active_share: float, partitions: int) -> int:
    """Follow subscriptions for ``followers`` users, presence "seen now" for a share of them."""
    target = f"followers:{STAR}"
    now = int(time.time() * 1000)
    every = round(1 / active_share) if active_share > 0 else 0
    active = 0
    with tqdm(total=followers, desc="fan-out: subscriptions", unit="sub", leave=False) as bar:
        for i in range(followers):
            u = follower(i)
            p = partition_for(u, partitions)
            produce(prod, "notify.subscriptions", f"{u}|{target}".encode(),
                    orjson.dumps({"v": 1, "user_id": u, "target": target}), p)
            if every and i % every == 0:
                produce(prod, "notify.presence", u.encode(),
                        orjson.dumps({"v": 1, "user_id": u, "seen_ms": now}), p)
                active += 1
            if i % 50_000 == 49_999:
                prod.poll(0)
                bar.update(50_000)
    prod.flush(120)
    return active


def request(nid: str, *, audience: dict | None = None, user: str | None = None,
            channels: tuple[str, ...] = ("inapp",), priority: str = "normal",
            type_: str = "social.post") -> bytes:
    body = {"v": 1, "id": nid, "type": type_, "priority": priority, "channels": list(channels),
            "title": "Bench", "body": f"{nid}", "created_at": int(time.time() * 1000)}
    if audience is not None:
        body["audience"] = audience
    else:
        body["recipients"] = [user]
    return orjson.dumps(body)


class CriticalLoad(threading.Thread):
    """Critical push requests at a steady rate on notify.critical until stopped."""

    def __init__(self, brokers: str, rate: float, partitions: int) -> None:
        super().__init__(daemon=True)
        self._prod = Producer({"bootstrap.servers": brokers, "linger.ms": 1})
        self._rate = rate
        self._partitions = partitions
        self._halt = threading.Event()
        self.sent = 0

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._halt.is_set():
            u = user_id(self.sent % CRITICAL_USERS)
            produce(self._prod, "notify.critical", u.encode(),
                    request(f"fcrit-{self.sent}", user=u, channels=("push",),
                            priority="critical", type_="auth.code"),
                    partition_for(u, self._partitions))
            self._prod.poll(0)
            self.sent += 1
            wait = t0 + self.sent / self._rate - time.monotonic()
            if wait > 0:
                self._halt.wait(wait)
        self._prod.flush(30)

    def stop(self) -> None:
        self._halt.set()
        self.join(60)


def progress(r: redis.Redis, nid: str) -> dict[str, int]:
    """nf:fanout:{id} counters summed over partitions (fields "{p}:expanded", ...)."""
    out = dict.fromkeys(COUNTERS, 0)
    try:
        fields = r.hgetall(f"nf:fanout:{nid}")
    except redis.RedisError:  # busy with a big in-app script (BUSY, timeout): ask again
        return out
    for k, v in fields.items():
        name = k.decode().rsplit(":", 1)[-1]
        if name in out:
            out[name] += int(v)
    return out


def sent_count(socket: str, nid: str) -> tuple[int, int]:
    (n, last), = q(socket, f"SELECT count(), max(event_ms) FROM notiflow.receipts "
                              f"WHERE notification_id = '{nid}' AND outcome = 'sent'")
    return int(n), int(last or 0)


def fan_out(stack, prod: Producer, r: redis.Redis, nid: str, *, hybrid: bool, expect_now: int,
            audience_size: int, partitions: int, timeout: float) -> dict:
    """Publish one followers-audience request; wait until expanded and delivered."""
    t0 = time.time()
    produce(prod, "notify.requests", STAR.encode(),
            request(nid, audience={"kind": "followers", "id": STAR, "hybrid": hybrid}),
            partition_for(STAR, partitions))
    prod.flush(10)
    expand_s = None
    sent = last_ms = 0
    deadline = t0 + timeout
    with tqdm(total=expect_now, desc=f"{nid}: delivered", unit="user", leave=False) as bar:
        while time.time() < deadline:
            prog = progress(r, nid)
            if expand_s is None and prog["expanded"] >= audience_size:
                expand_s = time.time() - t0
            sent, last_ms = sent_count(stack.loader_socket, nid)
            bar.update(sent - bar.n)
            if expand_s is not None and sent >= expect_now:
                break
            time.sleep(0.2)
    prog = progress(r, nid)
    deliver_s = (last_ms / 1000 - t0) if sent >= expect_now and last_ms else None
    return {"id": nid, "hybrid": hybrid, "audience": audience_size, "expected_now": expect_now,
            "expand_s": expand_s, "deliver_s": deliver_s, "sent": sent, "progress": prog}


def wait_bootstrap(stack, prod: Producer, partitions: int, timeout: float = 600) -> float:
    """One probe request per partition; its receipt means that partition has read its
    settings, devices, subscriptions and presence up to the high watermark."""
    t0 = time.time()
    for p in range(partitions):
        i = next(i for i in range(10**6) if partition_for(user_id(i), partitions) == p)
        produce(prod, "notify.requests", user_id(i).encode(),
                request(f"fprobe-{p}", user=user_id(i)), p)
    prod.flush(30)
    sql = "SELECT count() FROM notiflow.receipts WHERE startsWith(notification_id, 'fprobe-')"
    while q(stack.loader_socket, sql)[0][0] < partitions:
        if time.time() - t0 > timeout:
            raise SystemExit(f"fan-out: flows not bootstrapped after {timeout}s")
        time.sleep(0.5)
    return time.time() - t0


def run(args, panels: list[Panel]) -> dict:
    from stack.env import start_stack
    from stack.services import start_flow

    work = Path(tempfile.mkdtemp(prefix="notiflow-fanout-"))
    stack = start_stack(ROOT, with_flows=False, workdir=work)
    flows = []
    crit: CriticalLoad | None = None
    out: dict = {"followers": args.fanout_followers, "critical_rate": args.critical_rate}
    try:
        env = stack.env()
        prod = make_producer(stack.brokers)
        r = redis.Redis.from_url(stack.redis_url, socket_timeout=30)
        load_users(prod, "notify.", CRITICAL_USERS, args.partitions)  # settings + a device
        t = time.time()
        out["active"] = load_audience(prod, args.fanout_followers, args.fanout_active,
                                      args.partitions)
        out["load_s"] = time.time() - t
        for lane, procs in (("main", args.processes), ("critical", 1), ("retry", 1)):
            flows += start_flow(lane, env, processes=procs, workers=1,
                                recovery_dir=work / f"rec-{lane}", snapshot_s=10,
                                log_dir=work / "logs")
        out["bootstrap_s"] = wait_bootstrap(stack, prod, args.partitions)
        crit = CriticalLoad(stack.brokers, args.critical_rate, args.partitions)
        crit.start()
        time.sleep(2)  # critical latency before the fan-out starts is in the figure too
        runs = [fan_out(stack, prod, r, "fan-all", hybrid=False,
                        expect_now=args.fanout_followers, audience_size=args.fanout_followers,
                        partitions=args.partitions, timeout=args.fanout_timeout)]
        if out["active"]:
            runs.append(fan_out(stack, prod, r, "fan-hybrid", hybrid=True,
                                expect_now=out["active"], audience_size=args.fanout_followers,
                                partitions=args.partitions, timeout=args.fanout_timeout))
        crit.stop()
        out["critical_published"] = crit.sent
        crit = None
        sql = ("SELECT count() FROM notiflow.receipts WHERE startsWith(notification_id, "
               "'fcrit-') AND channel = 'push'")
        deadline = time.time() + 60
        while q(stack.loader_socket, sql)[0][0] < out["critical_published"] and time.time() < deadline:
            time.sleep(0.5)
        out["runs"] = runs
        out["critical"] = q(stack.loader_socket, """
            SELECT count(), quantile(0.5)(latency_ms), quantile(0.99)(latency_ms), max(latency_ms)
            FROM notiflow.receipts WHERE startsWith(notification_id, 'fcrit-')
              AND outcome = 'sent'""")[0]
        out["flow_rss_mib"] = {f.name: _peak_rss_mib(f.pid) for f in flows if f.alive}
        try:  # receipts on disk per row (docs/capacity.md sizes ClickHouse from it)
            out["storage"] = q(stack.loader_socket, """
                SELECT sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes)
                FROM system.parts WHERE database = 'notiflow' AND table = 'receipts'
                  AND active""")[0]
        except LoaderError:
            pass
        panels.append(fetch(stack.loader_socket,
                            f"{args.fanout_followers:,}-follower fan-out (in-app, hybrid off, "
                            f"then hybrid with {args.fanout_active:.0%} active) + critical push "
                            f"at {args.critical_rate:g}/s",
                            "startsWith(notification_id, 'fan-') "
                            "OR startsWith(notification_id, 'fcrit-')"))
    finally:  # whatever failed, nothing of this stack may outlive the bench
        if crit is not None:
            with contextlib.suppress(Exception):
                crit.stop()
        for f in reversed(flows):
            with contextlib.suppress(Exception):
                f.stop()
        stack.stop()
    report(out)
    return out


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _s(v: float | None) -> str:
    return "did not finish" if v is None else f"{v:.1f}"


def report(out: dict) -> None:
    console.print(f"[bold]fan-out[/]: {out['followers']:,} followers ({out['active']:,} active), "
                  f"subscriptions published in {out['load_s']:.1f} s, flows bootstrapped in "
                  f"{out['bootstrap_s']:.1f} s")
    t = Table(title=f"{out['followers']:,}-follower fan-out: published -> all expanded (Redis "
                    "nf:fanout) / last sent receipt (ClickHouse)")
    for c in ("request", "expanded", "routed now", "deferred", "expand s", "deliver s", "sent/s"):
        t.add_column(c)
    for r in out.get("runs", []):
        rate = f"{r['sent'] / r['deliver_s']:,.0f}" if r["deliver_s"] else "-"
        prog = r["progress"]
        t.add_row(r["id"], f"{prog['expanded']:,}", f"{prog['routed_now']:,}",
                  f"{prog['deferred']:,}", _s(r["expand_s"]), _s(r["deliver_s"]), rate)
    console.print(t)
    if "critical" in out:
        n, p50, p99, mx = out["critical"]
        console.print(f"critical push at {out['critical_rate']:g}/s during the fan-outs: "
                      f"{n:,} of {out['critical_published']:,} sent, p50 {p50:.0f} ms, "
                      f"[bold]p99 {p99:.0f} ms[/], max {mx:.0f} ms")
    if out.get("storage") and out["storage"][0]:
        rows, packed, raw = (int(x) for x in out["storage"])
        console.print(f"receipts in ClickHouse: {rows:,} rows, {packed / rows:.1f} B a row "
                      f"compressed, {raw / rows:.1f} B uncompressed ({raw / max(packed, 1):.1f}x)")
    if out.get("flow_rss_mib"):
        console.print("peak RSS per flow process (MiB): "
                      + ", ".join(f"{k}={v:,.0f}" for k, v in out["flow_rss_mib"].items()))
