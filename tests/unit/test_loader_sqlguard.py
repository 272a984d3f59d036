"""The loader's read-only check, without a store."""

from __future__ import annotations

import pytest

from loader.sqlguard import read_only_violation


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "  -- why\n select count() from notiflow.receipts;",
        "/* c */ WITH 1 AS x SELECT x",
        "(SELECT 1) UNION ALL (SELECT 2)",
        "SHOW TABLES FROM notiflow",
        "DESCRIBE notiflow.receipts",
        "EXPLAIN SELECT 1",
        "SELECT 'a;b'",
    ],
)
def test_sqlguard_allows_single_reads(sql: str) -> None:
    assert read_only_violation(sql) is None


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "-- only a comment",
        "INSERT INTO t VALUES (1)",
        "drop table notiflow.receipts",
        "SELECT 1; DROP TABLE t",
        "SELECT 1 INTO OUTFILE 'x.csv'",
        "SET readonly = 0",
        "OPTIMIZE TABLE notiflow.receipts",
    ],
)
def test_sqlguard_refuses_everything_else(sql: str) -> None:
    assert read_only_violation(sql)
