"""The checkpointer ``langgraph dev`` opens: ours, so a conversation is one thread wherever it goes on.

``langgraph.json`` names ``checkpointer`` (``"checkpointer": {"path":
"agent_ng.persistence.studio.checkpointer"}``); langgraph-api enters it when the server starts
and leaves it when the server stops. It opens the saver ``AGENT_CHECKPOINT_URL`` names with the
pool size, timeout, retention and thread locks of the settings, as ``agent-ng ask`` and
``agent-ng serve`` open it (``agent_ng.graph.agent.open_agent``), so a thread any of them wrote
is read and continued by the others. ``opened`` gives that saver to ``agent_ng.graph.studio``,
whose runs hold its thread locks (langgraph-api hands the graph a wrapper of it, which has none).

The path is dotted to the end: langgraph-api 0.16.7 splits a path without ``/`` or ``.py:`` at
its last dot (``module:name`` is not found), and a ``./file.py:name`` path is resolved from the
working directory, not from ``langgraph.json``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.checkpoint.base import BaseCheckpointSaver

from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.settings import Settings

_open: list[BaseCheckpointSaver] = []


@asynccontextmanager
async def checkpointer() -> AsyncIterator[BaseCheckpointSaver]:
    """The saver of ``AGENT_CHECKPOINT_URL`` (``memory://`` included), open while the server runs."""
    settings = Settings()
    async with open_checkpointer(settings.checkpoint_url, pool_size=settings.checkpoint_pool_size) as saver:
        _open.append(saver)
        try:
            yield saver
        finally:
            _open.remove(saver)


def opened() -> BaseCheckpointSaver | None:
    """The saver ``checkpointer`` opened in this process, while it is open."""
    return _open[-1] if _open else None
