"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.openai_server import OpenAIServer, ScriptedOpenAI, running_server


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A scripted OpenAI-compatible server of this test's own (see tests/openai_server.py).

    Script it with ``openai_server.script.replies``; point ``ChatOpenAI`` at
    ``openai_server.base_url``.
    """
    script = ScriptedOpenAI()
    with running_server(script) as base_url:
        yield OpenAIServer(script, base_url)


POSTGRES_URL = os.environ.get("AGENT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The real PostgreSQL the durability tests use (CI starts it); each test uses its own thread ids."""


@pytest.fixture(params=["sqlite", "postgres"])
def checkpoint_url(request, tmp_path) -> str:
    """A real checkpoint store: a SQLite file of this test's own, or the shared PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'checkpoints.db'}"
    return POSTGRES_URL
