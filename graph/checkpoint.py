"""Checkpointers from one URL (``AGENT_CHECKPOINT_URL``).

    async with open_checkpointer("sqlite:///agent.db") as saver:
        graph = build_graph(checkpointer=saver)

``memory://`` keeps threads in the process (tests), ``sqlite:///path.db`` in a file (the
default: embedded, survives restarts; ``sqlite:////abs/path.db`` for an absolute path),
``postgresql://...`` in PostgreSQL when several replicas share threads (a pool of
``pool_size`` connections; needs the ``postgres`` extra).

Each saver comes with the thread locks of its reach (``graph.thread_lock``): a file lock per
thread next to a SQLite database, a PostgreSQL advisory lock per thread on one extra session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from graph.thread_lock import FileThreadLocks, PostgresThreadLocks, attach

SETUP_LOCK_KEY = 0x6167656E746E67
"""Advisory lock that serialises ``setup()`` (table creation) across replicas starting together."""

SQLITE_SYNCHRONOUS = "NORMAL"
"""The saver runs SQLite in WAL mode, where NORMAL keeps every commit through a crash of the
process and skips the fsync per commit that FULL (the default) pays: each parallel tool's
result is its own commit, so FULL made 16 parallel tools wait on 16 fsyncs in a row
(bench/README.md, parallel). Only an OS crash or power loss can lose the last commits."""


@asynccontextmanager
async def open_checkpointer(url: str, *, pool_size: int = 10) -> AsyncIterator[BaseCheckpointSaver]:
    scheme, _, rest = url.partition("://")
    if scheme == "memory":
        yield InMemorySaver()
    elif scheme == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(path) as saver:
            await saver.setup()
            await saver.conn.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
            if path != ":memory:":
                attach(saver, FileThreadLocks(Path(f"{path}.locks")))
            yield saver
    elif scheme in ("postgresql", "postgres"):
        async with postgres_saver(url, pool_size) as saver:
            yield saver
    else:
        raise ValueError(
            f"unsupported checkpoint URL {url!r}: use memory://, sqlite:///path.db "
            "or postgresql://user@host/db"
        )


@asynccontextmanager
async def postgres_saver(url: str, pool_size: int) -> AsyncIterator[BaseCheckpointSaver]:
    """An ``AsyncPostgresSaver`` on a connection pool, set up once, with advisory thread locks."""
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool
    except ImportError as e:
        raise RuntimeError(
            "a postgresql:// checkpoint URL needs the postgres extra: "
            "pip install 'agent-ng[postgres]'"
        ) from e

    connection = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    async with AsyncConnectionPool(url, min_size=1, max_size=pool_size, kwargs=connection, open=False) as pool:
        saver = AsyncPostgresSaver(pool)
        locks = PostgresThreadLocks(url)
        try:
            session = await locks.session()
            await session.execute("SELECT pg_advisory_lock(%s)", (SETUP_LOCK_KEY,))
            try:
                await saver.setup()
            finally:
                await session.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))
            attach(saver, locks)
            yield saver
        finally:
            await locks.close()


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db`` (SQLAlchemy's form)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"a SQLite checkpoint URL looks like sqlite:///path.db, got {url!r}")
    return url[len(prefix):]
