"""The rollup DDL helpers (loader/rollups.py): the TTL statement and reading it back."""

from __future__ import annotations

from loader.rollups import BY_MINUTE, current_ttl_days, raw_ttl_ddl


def test_raw_ttl_ddl_and_parse():
    assert raw_ttl_ddl(7).endswith("MODIFY TTL toDateTime(event_at) + INTERVAL 7 DAY")
    assert raw_ttl_ddl(0).endswith("REMOVE TTL")
    assert current_ttl_days("MergeTree ORDER BY x TTL toDateTime(event_at) + toIntervalDay(30) "
                            "SETTINGS index_granularity = 8192") == 30
    assert current_ttl_days("MergeTree ORDER BY x SETTINGS index_granularity = 8192") == 0


def test_rollup_table_ddl_has_ttl_only_when_asked():
    assert "TTL minute + INTERVAL 400 DAY" in BY_MINUTE.table_ddl(400)
    assert "TTL" not in BY_MINUTE.table_ddl(0)
    assert BY_MINUTE.view == "notiflow.receipts_by_minute_mv"
    assert f"TO {BY_MINUTE.table} AS" in BY_MINUTE.view_ddl()
