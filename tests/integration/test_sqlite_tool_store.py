"""The SQLite tool store is one file that survives restarts and is shared by processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from agent_ng.engine.sqlite_store import SqliteToolStore
from agent_ng.engine.stores import open_tool_store


async def test_the_file_is_in_wal_mode_and_survives_reopening(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'engine.db'}"
    async with open_tool_store(url) as store:
        assert isinstance(store, SqliteToolStore)
        async with store.db.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone())[0] == "wal"
        await store.cache("k", "v", now=0.0, ttl_s=60.0)
        await store.record("add", "ok", 0.25)
    async with open_tool_store(url) as reopened:
        assert (await reopened.cached("k", now=1.0)).content == "v"
        assert await reopened.durations("add", 5) == [0.25]


async def test_another_process_sees_what_this_one_wrote_and_vice_versa(tmp_path):
    url = f"sqlite:///{tmp_path / 'engine.db'}"
    other_process = textwrap.dedent(
        f"""
        import asyncio
        from agent_ng.engine.stores import open_tool_store

        async def main():
            async with open_tool_store({url!r}) as store:
                seen = await store.cached("mine", now=1.0)
                await store.cache("theirs", "from the other process", now=0.0, ttl_s=60.0)
                await store.record("add", "ok", 0.5)
                print(seen.content)

        asyncio.run(main())
        """
    )
    async with open_tool_store(url) as store:
        await store.cache("mine", "from the test process", now=0.0, ttl_s=60.0)
        done = subprocess.run(
            [sys.executable, "-c", other_process], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "from the test process"
        assert (await store.cached("theirs", now=1.0)).content == "from the other process"
        [counts] = await store.counts()
        assert counts.calls == 1


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://relative.db", "nonsense"])
async def test_a_bad_store_url_is_refused_with_a_clear_error(url):
    with pytest.raises(ValueError, match="sqlite:///path.db"):
        async with open_tool_store(url):
            pass
