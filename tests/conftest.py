"""Shared fixtures: one real local stack (Tansu, Redis, sandbox, loader/chDB) per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    from stack.env import start_stack

    s = start_stack(workdir=tmp_path_factory.mktemp("stack"))
    try:
        yield s
    finally:
        s.stop()


def pytest_terminal_summary(terminalreporter):
    """The fault suite's figures (tests/faults): faults injected, accepted, delivered..."""
    from tests.faults.conftest import SUMMARY

    if not SUMMARY:
        return
    tr = terminalreporter
    tr.section("fault suite")
    tr.write_line(f"{'fault':46} {'injected':>8} {'accepted':>8} {'delivered':>9} {'lost':>5} {'dup':>4}")
    for r in SUMMARY:
        tr.write_line(f"{r['fault']:46} {r['injected']:>8} {r['accepted']:>8} {r['delivered']:>9} "
                      f"{r['lost']:>5} {r['duplicated']:>4}")
