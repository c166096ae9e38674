"""Shared pytest fixtures."""

from __future__ import annotations

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
