"""Decide whether a SQL text is a read statement before it reaches the store.

The store also runs reader queries with ClickHouse's ``readonly`` setting, which is the real
guard; this check gives a clear 400 reason early and closes what ``readonly`` leaves open
(``INTO OUTFILE`` writes a file even in readonly mode, and multi-statement texts).
"""

from __future__ import annotations

import re

READ_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.I)


def read_only_violation(sql: str) -> str | None:
    """Return why ``sql`` is refused, or None when it is a single read statement."""
    text = _COMMENTS.sub(" ", sql).strip().rstrip(";").strip()
    if not text:
        return "empty query"
    if ";" in _strip_literals(text):
        return "only one statement per request"
    m = _FIRST_WORD.match(text)
    word = m.group(1).upper() if m else ""
    if word not in READ_KEYWORDS:
        allowed = "/".join(sorted(READ_KEYWORDS))
        return f"read-only endpoint: {word or 'statement'} is not allowed (use {allowed})"
    if _OUTFILE.search(text):
        return "read-only endpoint: INTO OUTFILE is not allowed"
    return None


def _strip_literals(text: str) -> str:
    """Drop quoted strings so a ';' inside a literal does not count as a separator."""
    return re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`", "''", text)
