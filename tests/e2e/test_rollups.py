"""Rollups (materialized views) and the raw-receipts TTL, on real chDB.

Receipts go through the real path (notify.receipts -> the session's loader -> chDB); the
rollups must then agree with the raw table: counts exactly, latency quantiles within the
t-digest's error. Every SQL block of docs/analytics.md runs against that data (through the
loader's local socket, as ``python -m loader.sql`` does), and so does every named query. The
back-fill and the TTL run in a child process on a folder of their own (chDB lets a process
open one data folder, and the loader owns the session's).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from loader.client import Loader, local_sql
from loader.queries import NAMED
from loader.rollups import BY_MINUTE, REASONS_BY_MINUTE, current_ttl_days
from notiflow import topics
from schemas.receipt import Receipt, encode_rows

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "analytics.md"
MINUTE_MS = 60_000


def query(stack, sql: str) -> list[list]:
    """Raw SQL through the loader's local socket: the path analysts use (python -m loader.sql)."""
    return local_sql(stack.loader_socket, sql, timeout=30).rows


def make_receipts(tag: str, n: int, now_ms: int) -> list[Receipt]:
    """Receipts over the last 5 minutes, every channel, outcome and priority; some opt-outs."""
    rnd = random.Random(7)
    plans = [  # (channel, provider, outcome, reason)
        ("push", "apns", "sent", ""), ("push", "fcm", "sent", ""),
        ("push", "apns", "failed", "410 Unregistered"), ("email", "sendgrid", "sent", ""),
        ("email", "ses", "failed", "400 bad address"), ("sms", "twilio", "sent", ""),
        ("sms", "", "suppressed", "sms turned off"), ("inapp", "redis", "sent", ""),
        ("inapp", "", "suppressed", f"opted out of {tag}.marketing"),
        ("push", "", "no_target", "no active device"), ("", "", "rejected", "payload: not valid JSON"),
        ("inapp", "", "bundled", f"bundled into {tag}-b"),
    ]
    out = []
    for i in range(n):
        ch, prov, outcome, reason = plans[i % len(plans)]
        typ = f"{tag}.marketing.weekly" if "opted out" in reason else rnd.choice(
            [f"{tag}.social.like", f"{tag}.social.comment"])
        event = now_ms - rnd.randrange(0, 5) * MINUTE_MS - rnd.randrange(0, 1000)
        out.append(Receipt(
            notification_id=f"{tag}-{i}", user_id=f"{tag}-u{i % 37}", type=typ,
            priority=rnd.choice(["critical", "high", "normal", "low"]), channel=ch,
            provider=prov, target="t", outcome=outcome, reason=reason,
            created_ms=event - rnd.randrange(5, 3000), event_ms=event))
    return out


@pytest.fixture(scope="module")
def loaded(stack):
    """A tag, and its receipts loaded into the session's chDB through Kafka."""
    tag = f"rt{uuid.uuid4().hex[:8]}"
    rows = make_receipts(tag, 2400, int(time.time() * 1000))
    p = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 5})
    topic = topics.name(topics.RECEIPTS)
    for i in range(0, len(rows), 500):
        p.produce(topic, encode_rows(rows[i:i + 500]))
    assert p.flush(15) == 0
    Loader(stack.stats_url, stack.loader_token).flushed(60)
    n = query(stack, f"SELECT count() FROM notiflow.receipts WHERE startsWith(type, '{tag}.')")
    assert n[0][0] == len(rows)
    return tag


def test_rollup_counts_match_raw_receipts(stack, loaded):
    tag = loaded
    keys = "minute, channel, outcome, type, provider, priority"
    raw = query(stack, f"""
        SELECT toStartOfMinute(event_at) AS minute, channel, outcome, type, provider, priority,
               count() FROM notiflow.receipts WHERE startsWith(type, '{tag}.')
        GROUP BY {keys} ORDER BY {keys}""")
    rolled = query(stack, f"""
        SELECT {keys}, sum(receipts) FROM {BY_MINUTE.table} WHERE startsWith(type, '{tag}.')
        GROUP BY {keys} ORDER BY {keys}""")
    assert len(raw) > 50
    assert rolled == raw


def test_rollup_latency_quantiles_close_to_exact(stack, loaded):
    tag = loaded
    exact = query(stack, f"""
        SELECT priority, quantileExact(0.5)(latency_ms), quantileExact(0.99)(latency_ms)
        FROM notiflow.receipts WHERE startsWith(type, '{tag}.') AND outcome = 'sent'
        GROUP BY priority ORDER BY priority""")
    digest = query(stack, f"""
        SELECT priority, quantileTDigestMerge(0.5)(latency_ms), quantileTDigestMerge(0.99)(latency_ms)
        FROM {BY_MINUTE.table} WHERE startsWith(type, '{tag}.') AND outcome = 'sent'
        GROUP BY priority ORDER BY priority""")
    assert [r[0] for r in digest] == [r[0] for r in exact] == ["critical", "high", "low", "normal"]
    for (_, p50, p99), (_, d50, d99) in zip(exact, digest, strict=True):
        # latencies are 5..3000 ms: allow 3 % of that range
        assert abs(d50 - p50) <= 90 and abs(d99 - p99) <= 90, (exact, digest)


def test_reasons_rollup_counts_users_and_skips_sent(stack, loaded):
    tag = loaded
    raw = query(stack, f"""
        SELECT outcome, reason, count(), uniqExact(user_id) FROM notiflow.receipts
        WHERE startsWith(type, '{tag}.') AND outcome NOT IN ('sent', 'bundled')
        GROUP BY outcome, reason ORDER BY outcome, reason""")
    rolled = query(stack, f"""
        SELECT outcome, reason, sum(receipts), uniqMerge(users) FROM {REASONS_BY_MINUTE.table}
        WHERE startsWith(type, '{tag}.') GROUP BY outcome, reason ORDER BY outcome, reason""")
    assert rolled == raw  # uniq is exact at this size
    assert not {"sent", "bundled"} & {r[0] for r in rolled}


def test_raw_receipts_have_the_configured_ttl(stack):
    engine = query(stack, "SELECT engine_full FROM system.tables "
                          "WHERE database = 'notiflow' AND name = 'receipts'")[0][0]
    assert current_ttl_days(engine) == 30, engine
    rollup = query(stack, "SELECT engine_full FROM system.tables "
                          "WHERE database = 'notiflow' AND name = 'receipts_by_minute'")[0][0]
    assert current_ttl_days(rollup) == 400, rollup


def doc_queries() -> list[tuple[str, str]]:
    """(heading, sql) for every ```sql block of docs/analytics.md."""
    out, heading, sql = [], "", None
    for line in DOC.read_text().splitlines():
        if sql is not None:
            if line.startswith("```"):
                out.append((heading, "\n".join(sql)))
                sql = None
            else:
                sql.append(line)
        elif line.startswith("## "):
            heading = line[3:]
        elif line.strip() == "```sql":
            sql = []
    return out


def test_docs_analytics_queries_run_on_real_data(stack, loaded):
    tag = loaded
    blocks = doc_queries()
    assert len(blocks) >= 6
    for heading, sql in blocks:
        sql = sql.replace("'n-1'", f"'{tag}-1'")  # a notification that exists
        rows = query(stack, sql)
        assert rows, f"{heading}: no rows\n{sql}"
    opt = next(sql for h, sql in blocks if h.startswith("Which types users opt out"))
    types = {r[0]: r for r in query(stack, opt)}
    # every 12th receipt is an opt-out (200 of 2400), spread over all 37 users
    assert types[f"{tag}.marketing.weekly"][1:] == [200, 37]


def test_every_named_query_runs_on_real_data(stack, loaded):
    """What the dashboard, `make stats` and fan-out status ask, over TCP with the token."""
    loader = Loader(stack.stats_url, stack.loader_token)
    sample = {"minutes": 60, "bucket": 1, "limit": 10, "id": f"{loaded}-1"}
    for name, named in NAMED.items():
        res = loader.run(name, **{p: sample[p] for p in named.params})
        assert res.rows, name


_CHILD = r"""
import json, sys, time
import clickhouse_connect
from loader.store import Store
from schemas.receipt import RECEIPTS_DDL, Receipt, encode_rows

path = sys.argv[1]
now = int(time.time() * 1000)
old = now - 40 * 86_400_000

def rows(ids, event_ms):
    return encode_rows([Receipt(notification_id=f"n{i}", user_id="u", type="t", priority="high",
                                channel="push", provider="apns", target="x", outcome="sent",
                                reason="", created_ms=event_ms - 10, event_ms=event_ms)
                        for i in ids])

# a store from before the rollups: raw table only, 40-day-old and fresh receipts
c = clickhouse_connect.get_client(dsn=f"chdb://{path}")
c.command("CREATE DATABASE IF NOT EXISTS notiflow")
c.command(RECEIPTS_DDL)
c.raw_insert("notiflow.receipts", insert_block=rows(range(5), old), fmt="JSONEachRow")
c.raw_insert("notiflow.receipts", insert_block=rows(range(5, 12), now), fmt="JSONEachRow")
c.close()

s = Store("", path, receipts_ttl_days=30, rollup_ttl_days=400)  # upgrade: back-fill + TTL
w = s._writer
count = lambda sql: int(w.command(sql))
out = {"backfilled": count("SELECT sum(receipts) FROM notiflow.receipts_by_minute")}
s.insert(rows(range(12, 15), now))  # after the upgrade: through the view
out["after_insert"] = count("SELECT sum(receipts) FROM notiflow.receipts_by_minute")
w.command("OPTIMIZE TABLE notiflow.receipts FINAL")  # merges apply the TTL
out["raw_after_ttl"] = count("SELECT count() FROM notiflow.receipts")
out["rollup_after_ttl"] = count("SELECT sum(receipts) FROM notiflow.receipts_by_minute")
s.close()
s = Store("", path, receipts_ttl_days=30, rollup_ttl_days=400)  # restart: nothing again
out["after_restart"] = int(s._writer.command("SELECT sum(receipts) FROM notiflow.receipts_by_minute"))
s.close()
print(json.dumps(out))
"""


def test_rollups_backfill_once_and_ttl_drops_only_raw(tmp_path):
    r = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "chdb")], cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == {"backfilled": 12, "after_insert": 15, "raw_after_ttl": 10,
                   "rollup_after_ttl": 15, "after_restart": 15}

