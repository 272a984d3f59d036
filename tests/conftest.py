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
