"""The tool store for a URL (``AGENT_CACHE_URL``): memory, a SQLite file, or Redis.

    async with open_tool_store("sqlite:///tool_engine.db") as store:
        graph = build_graph(checkpointer=saver, tool_store=store)

What a store keeps, and the protocol every kind meets, is ``agent_ng.engine.store``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agent_ng.engine.store import MemoryToolStore, ToolStore


@asynccontextmanager
async def open_tool_store(
    url: str, *, max_entries: int = 10_000, key_prefix: str = "agent-ng:"
) -> AsyncIterator[ToolStore]:
    """The store for ``url``, open for the duration of the block (``key_prefix``: Redis only)."""
    scheme, _, _ = url.partition("://")
    if scheme == "memory":
        yield MemoryToolStore(max_entries)
    elif scheme == "sqlite":
        from agent_ng.engine.sqlite_store import SqliteToolStore

        async with SqliteToolStore.open(url, max_entries) as store:
            yield store
    elif scheme in ("redis", "rediss"):
        from agent_ng.engine.redis_store import RedisToolStore

        async with RedisToolStore.open(url, max_entries, key_prefix) as store:
            yield store
    else:
        raise ValueError(
            f"unsupported tool store URL {url!r} (AGENT_CACHE_URL): use memory://, "
            "sqlite:///path.db or redis://host:6379/0"
        )
