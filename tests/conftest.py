"""Shared pytest fixtures, the ``integration`` marker by folder, and ``needs`` for system parts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.openai_server import OpenAIServer, ScriptedOpenAI, running_server
from tests.helpers.system import POSTGRES_URL, REDIS_URL, need

INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        need(*marker.args)


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A scripted OpenAI-compatible server of this test's own (see tests/helpers/openai_server.py).

    Script it with ``openai_server.script.replies``; point ``ChatOpenAI`` at
    ``openai_server.base_url``.
    """
    script = ScriptedOpenAI()
    with running_server(script) as base_url:
        yield OpenAIServer(script, base_url)


@pytest.fixture(params=["sqlite", "postgres"])
def checkpoint_url(request, tmp_path) -> str:
    """A real checkpoint store: a SQLite file of this test's own, or the shared PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'checkpoints.db'}"
    need("postgres")
    return POSTGRES_URL


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def any_checkpoint_url(request, tmp_path) -> str:
    """Every checkpointer ``open_checkpointer`` opens: ``memory://`` besides ``checkpoint_url``'s two."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'checkpoints.db'}"
    need("postgres")
    return POSTGRES_URL


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted after it."""
    need("redis")
    from redis import Redis

    prefix = f"agent-ng-test:{uuid.uuid4().hex}:"
    yield prefix
    redis = Redis.from_url(REDIS_URL)
    keys = list(redis.scan_iter(match=f"{prefix}*"))
    if keys:
        redis.delete(*keys)
    redis.close()


@pytest.fixture(autouse=True)
def run_queue(monkeypatch) -> str:
    """A run queue of this test's own (``AGENT_RUN_QUEUE``, inherited by the servers it starts): on
    the shared PostgreSQL, a replica takes over any lapsed run of its queue, so a run a test left
    running must not be taken over by another test's service."""
    queue = f"test-{uuid.uuid4().hex}"
    monkeypatch.setenv("AGENT_RUN_QUEUE", queue)
    return queue
