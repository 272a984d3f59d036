"""The receipts store: chDB in-process, or a ClickHouse server, behind one clickhouse-connect API.

Two clients: a writer for inserts and offsets, and a reader for the queries, whose
session is ``readonly``. Each client has its own handle and lock, so an analyst's query
never holds the writer's lock (measured: concurrent inserts and queries on two chDB handles
of one folder ran with no errors). On chDB the reader is ``readonly=1``, which also forbids
table functions (``file()`` could read any local file); per-query settings are then
impossible (they are applied with SET), so limits are set once on the session. On a server
it is ``readonly=2``: the HTTP client sends settings with every request.

Inserts send the Kafka bytes unchanged as ``FORMAT JSONEachRow`` (fastest path measured:
~0.3 s per 100k rows, against ~1 s through ``command(data=...)``). A batch is first
inserted strictly; if ClickHouse rejects it (it is one block, so nothing is written), the
batch is split into lines, each line is checked in Python, bad lines are logged and
counted, and the rest is inserted leniently.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import clickhouse_connect
import msgspec
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from loader.rollups import ensure_raw_ttl, ensure_rollups
from schemas.receipt import RECEIPTS_DDL

log = logging.getLogger("loader.store")

TABLE = "notiflow.receipts"

OFFSETS_DDL = """
CREATE TABLE IF NOT EXISTS notiflow.loader_offsets
(
    topic String,
    partition UInt32,
    next_offset Int64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (topic, partition)
"""

# strict: unknown keys are fine (a newer producer may add fields), bad values are not
_STRICT = {"input_format_skip_unknown_fields": 1}
# after the Python check: let ClickHouse skip what it still cannot parse
_LENIENT = {
    "input_format_skip_unknown_fields": 1,
    "input_format_allow_errors_num": 1_000_000_000,
    "input_format_allow_errors_ratio": 1,
}
_READ_LIMITS: dict[str, Any] = {
    "max_execution_time": 60,
    "max_result_rows": 1_000_000,
    "result_overflow_mode": "break",
}
_BAD_LINES_LOGGED = 5


class _Row(msgspec.Struct):
    """A receipt line as ClickHouse accepts it: every column optional, types checked."""

    notification_id: str = ""
    user_id: str = ""
    type: str = ""
    priority: str = ""
    channel: str = ""
    provider: str = ""
    target: str = ""
    outcome: str = ""
    reason: str = ""
    created_ms: int = 0
    event_ms: int = 0
    attempt: int = 1
    v: int = 1


_row_decoder = msgspec.json.Decoder(_Row)


@dataclass(frozen=True)
class InsertResult:
    written: int
    bad: int


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple]


class QueryError(Exception):
    """ClickHouse refused a reader query; the message is ClickHouse's own."""


class Store:
    """Owns the receipts store: schema, batched inserts, offsets, read-only queries."""

    def __init__(self, clickhouse_url: str = "", chdb_path: str = "var/chdb", *,
                 receipts_ttl_days: int = 30, rollup_ttl_days: int = 400) -> None:
        """Open the store.

        clickhouse_url: a ClickHouse server URL; empty opens chDB under ``chdb_path``.
        chdb_path: chDB data folder (created if missing), used only without a URL.
        receipts_ttl_days, rollup_ttl_days: how long raw receipts and rollups are kept
        (0: forever); see loader/rollups.py.
        """
        self._ttl_days = (receipts_ttl_days, rollup_ttl_days)
        if clickhouse_url:
            self.backend = "clickhouse"
            dsn = clickhouse_url
            reader_settings = {**_READ_LIMITS, "readonly": 2}
        else:
            self.backend = "chdb"
            path = os.path.realpath(chdb_path)
            os.makedirs(path, exist_ok=True)
            dsn = f"chdb://{path}"
            # readonly last: once it is set the session cannot change settings any more
            reader_settings = {**_READ_LIMITS, "readonly": 1}
        self._writer = clickhouse_connect.get_client(dsn=dsn)
        self._ensure_schema()
        self._reader = clickhouse_connect.get_client(dsn=dsn, settings=reader_settings)

    def _ensure_schema(self) -> None:
        self._writer.command("CREATE DATABASE IF NOT EXISTS notiflow")
        self._writer.command(RECEIPTS_DDL)
        self._writer.command(OFFSETS_DDL)
        raw_days, rollup_days = self._ttl_days
        # rollups first: a back-fill must see the receipts a new TTL is about to drop
        filled = ensure_rollups(self._writer, rollup_days)
        if filled:
            log.info("rollups back-filled from existing receipts: %s", ", ".join(filled))
        if ensure_raw_ttl(self._writer, raw_days):
            log.info("raw receipts TTL set to %s days", raw_days or "no")

    # ---- writes -------------------------------------------------------------------

    def insert(self, data: bytes) -> InsertResult:
        """Insert JSONEachRow ``data`` as one batch; bad lines are skipped, logged, counted.

        Raises ClickHouseError when the store itself fails (the caller retries the batch).
        """
        try:
            summary = self._writer.raw_insert(
                TABLE, insert_block=data, fmt="JSONEachRow", settings=_STRICT
            )
            return InsertResult(written=summary.written_rows, bad=0)
        except ClickHouseError as exc:
            if not _is_parse_error(exc):
                raise
            log.warning("batch rejected (%s); checking it line by line", _first_line(exc))
        return self._insert_checked(data)

    def _insert_checked(self, data: bytes) -> InsertResult:
        good: list[bytes] = []
        bad = 0
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                _row_decoder.decode(line)
            except msgspec.DecodeError as exc:
                bad += 1
                if bad <= _BAD_LINES_LOGGED:
                    log.warning("bad receipt line skipped: %s: %.200r", exc, line)
                continue
            good.append(line)
        written = 0
        if good:
            summary = self._writer.raw_insert(
                TABLE, insert_block=b"\n".join(good), fmt="JSONEachRow", settings=_LENIENT
            )
            written = summary.written_rows
            bad += max(0, len(good) - written)
        if bad:
            log.warning("skipped %d bad receipt lines in a batch of %d", bad, written + bad)
        return InsertResult(written=written, bad=bad)

    def save_offsets(self, topic: str, next_offsets: dict[int, int]) -> None:
        """Record the next offset to read per partition (after the rows are in)."""
        if not next_offsets:
            return
        version = time.time_ns()
        rows = [[topic, p, off, version] for p, off in sorted(next_offsets.items())]
        self._writer.insert(
            "notiflow.loader_offsets",
            rows,
            column_names=["topic", "partition", "next_offset", "version"],
        )

    def load_offsets(self, topic: str) -> dict[int, int]:
        """The next offset per partition recorded by the last run, {} on a fresh store."""
        res = self._writer.query(
            "SELECT partition, argMax(next_offset, version) FROM notiflow.loader_offsets"
            " WHERE topic = {topic:String} GROUP BY partition",
            parameters={"topic": topic},
        )
        return {int(p): int(off) for p, off in res.result_rows}

    def count_rows(self) -> int:
        return int(self._writer.command(f"SELECT count() FROM {TABLE}"))

    # ---- reads --------------------------------------------------------------------

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        """Run one read statement on the readonly session; ``params`` fill its
        ``{name:Type}`` placeholders (bound by ClickHouse, not spliced). Raises QueryError."""
        if ";" in _TOKENS.sub(" ", sql).strip().rstrip(";"):
            # chDB runs every statement of a text and mixes their outputs into the next
            # answer; a server refuses them anyway
            raise QueryError("one statement per query")
        try:
            res = self._reader.query(sql, parameters=params)
            if not res.column_names and not res.result_rows and self.backend == "chdb":
                # chDB answers an empty result without its header; a client still wants
                # the columns (a server sends them)
                desc = self._reader.query(f"DESCRIBE ({sql.strip().rstrip(';')})",
                                          parameters=params).result_rows
                return QueryResult(columns=[d[0] for d in desc], types=[d[1] for d in desc],
                                   rows=[])
            return QueryResult(
                columns=list(res.column_names),
                types=[t.name for t in res.column_types],
                rows=res.result_rows,
            )
        except Exception as exc:  # noqa: BLE001 (a broken result stream is the query's fault too)
            raise QueryError(_clean_message(exc)) from exc

    def close(self) -> None:
        for client in (self._reader, self._writer):
            try:
                client.close()
            except Exception:  # closing is best effort on shutdown
                log.debug("close failed", exc_info=True)


# one left-to-right pass: whichever starts first, a literal, a quoted name or a comment, is
# consumed whole, so "--" in a literal or "'" in a comment cannot hide a ";"
# (an unclosed quote matches nothing, so it hides nothing either)
_TOKENS = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|--[^\n]*|/\*.*?\*/", re.S)


def _is_parse_error(exc: ClickHouseError) -> bool:
    """A ClickHouse answer with an error code that is not a connection failure: the data's
    fault (a parse error), so the line-by-line path can tell good rows from bad ones. If the
    store itself is broken, that path's own insert fails too and the caller retries."""
    return getattr(exc, "code", None) is not None and not isinstance(exc, OperationalError)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _clean_message(exc: Exception) -> str:
    """ClickHouse's message without clickhouse-connect's wrapping and version trailer."""
    text = str(exc).strip()
    return text.split("\n(")[0].strip()[:2000]
