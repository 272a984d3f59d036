"""The gateway never runs with a user-token secret anyone could know (issue 9, B1)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from gateway.app import InsecureSettings, create_app
from gateway.user_tokens import MIN_SECRET_BYTES, SECRET_ENV, main, secret_problem, verify_token
from notiflow.config import Settings, get_settings
from stack.services import ROOT, free_port

GOOD = "x" * MIN_SECRET_BYTES


def test_the_built_in_secret_and_short_ones_are_refused_unless_dev_mode():
    assert SECRET_ENV in secret_problem(Settings(user_token_secret=Settings().user_token_secret))
    assert "too short" in secret_problem(Settings(user_token_secret=GOOD[1:]))
    assert secret_problem(Settings(user_token_secret=GOOD)) is None
    assert secret_problem(Settings(dev_mode=True)) is None


def test_the_app_refuses_to_start_with_the_built_in_secret(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv("NOTIFLOW_DEV_MODE", raising=False)
    with pytest.raises(InsecureSettings, match=SECRET_ENV), TestClient(create_app(Settings())):
        pass  # the lifespan raises before anything (Kafka, Redis) is touched


def test_python_m_gateway_exits_saying_what_to_set(tmp_path):
    """Before the fix this served (tokens anyone can mint accepted) and the wait timed out."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "NOTIFLOW_GATEWAY_SPOOL_DIR": str(tmp_path / "spool")}
    done = subprocess.run([sys.executable, "-m", "gateway", "--port", str(free_port())],
                          env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert SECRET_ENV in done.stderr and "NOTIFLOW_DEV_MODE" in done.stderr
    assert not (tmp_path / "spool").exists()  # refused before opening anything


@pytest.fixture
def no_env_secret(monkeypatch, tmp_path):
    """No secret in the environment, and a fake repo root whose var/stack.env we write."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv("NOTIFLOW_DEV_MODE", raising=False)
    monkeypatch.setattr("notiflow.local_stack.ROOT", tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_user_token_cli_signs_with_the_running_stacks_secret(no_env_secret, capsys):
    (no_env_secret / "var").mkdir()
    (no_env_secret / "var" / "stack.env").write_text(f"{SECRET_ENV}={GOOD}\n")
    assert main(["u-1"]) == 0
    assert verify_token(capsys.readouterr().out.strip(), GOOD.encode()).user_id == "u-1"


def test_user_token_cli_refuses_the_built_in_secret(no_env_secret, capsys):
    assert main(["u-1"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and SECRET_ENV in out.err
