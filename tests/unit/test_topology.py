"""Configurations that cannot work across processes are refused with one line; the rest pass.

``refusal`` judges the settings alone; ``agent-ng serve`` checks it before anything starts and
exits 2 with ``agent-ng: <reason>``. (The SQLite-across-machines rule needs Redis:
tests/integration/test_serve_workers.py.)
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from agent_ng.service.settings import ServiceSettings
from agent_ng.service.topology import refusal

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def no_agent_environment(monkeypatch, tmp_path):
    for name in ("AGENT_REDIS_URL", "AGENT_WORKERS", "AGENT_CHECKPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's


def settings(**fields) -> ServiceSettings:
    return ServiceSettings(**{"checkpoint_url": "sqlite:///threads.db", **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"checkpoint_url": "memory://"},
        {"workers": 2, "redis_url": REDIS},
        {"workers": 4, "redis_url": REDIS, "checkpoint_url": "postgresql://postgres@db/agent"},
    ],
    ids=["one-worker", "one-worker-memory", "workers-redis-sqlite", "workers-redis-postgres"],
)
def test_configurations_that_work_across_processes_pass(fields):
    assert refusal(settings(**fields)) is None


def test_workers_without_redis_are_refused_naming_the_setting():
    reason = refusal(settings(workers=2))

    assert reason is not None and "\n" not in reason
    assert reason.startswith("2 workers need AGENT_REDIS_URL")
    assert "event log" in reason


def test_workers_on_a_memory_checkpointer_are_refused_even_with_redis():
    reason = refusal(settings(workers=3, redis_url=REDIS, checkpoint_url="memory://"))

    assert reason is not None and "\n" not in reason
    assert "memory://" in reason and "3 workers" in reason


def test_agent_ng_serve_refuses_before_starting_with_one_line_and_exit_2(monkeypatch):
    from agent_ng.cli import serve as serve_module
    from agent_ng.cli.main import app

    monkeypatch.setattr("agent_ng.cli.main.tune_collector", lambda: None)
    started = []
    monkeypatch.setattr(serve_module, "serve_workers", started.append)

    result = CliRunner().invoke(app, ["serve", "--workers", "2", "--port", "0"])

    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"agent-ng: {refusal(settings(workers=2))}"
    assert started == []
