"""Tool stores for tests: in memory, in a SQLite file, and in the real Redis.

Each Redis store gets a key prefix of its own and its keys are deleted afterwards, so tests
never see each other's data nor leave any behind.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from agent_ng.engine.redis_store import RedisToolStore
from agent_ng.engine.sqlite_store import SqliteToolStore
from agent_ng.engine.store import MemoryToolStore, ToolStore
from tests.helpers.system import REDIS_URL, need

KINDS = ["memory", "sqlite", "redis"]


@asynccontextmanager
async def open_test_store(
    kind: str, tmp_path: Path, max_entries: int = 100, durations_kept: int = 1000
) -> AsyncIterator[ToolStore]:
    if kind == "memory":
        yield MemoryToolStore(max_entries, durations_kept)
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'tool_engine.db'}"
        async with SqliteToolStore.open(url, max_entries, durations_kept) as store:
            yield store
    else:
        need("redis")
        prefix = f"agent-ng-test:{uuid.uuid4().hex}:"
        async with RedisToolStore.open(REDIS_URL, max_entries, prefix, durations_kept) as store:
            try:
                yield store
            finally:
                keys = [key async for key in store.redis.scan_iter(match=prefix + "*")]
                if keys:
                    await store.redis.delete(*keys)
