"""Checkpointers from one URL (``AGENT_CHECKPOINT_URL``).

    async with open_checkpointer("sqlite:///agent.db") as saver:
        graph = build_graph(checkpointer=saver)

``memory://`` keeps threads in the process (tests), ``sqlite:///path.db`` in a file (the
default: embedded, survives restarts; ``sqlite:////abs/path.db`` for an absolute path; the
results of tools that finish together share one commit, ``agent_ng.persistence.sqlite_saver``),
``postgresql://...`` in PostgreSQL when several replicas share threads (a pool of
``pool_size`` connections; needs the ``postgres`` extra).

Each saver comes with the thread locks of its reach (``agent_ng.persistence.thread_lock``): a file lock per
thread next to a SQLite database, a PostgreSQL advisory lock per thread on one extra session
(``lock_url``: a direct URL when ``url`` goes through a transaction pooler such as PgBouncer).
Each SQLite or PostgreSQL saver also prunes old checkpoints in the background
(``agent_ng.persistence.retention``; ``retention`` defaults to the settings' ``AGENT_RETENTION_*``).
A PostgreSQL database that is unreachable or does not answer fails each operation within
``timeout_s`` (``AGENT_CHECKPOINT_TIMEOUT_S``) with ``CheckpointUnavailableError``.
Every saver also deletes one run's checkpoints (``adelete_for_runs``, what LangGraph Server's
``multitask_strategy="rollback"`` calls; ``agent_ng.persistence.run_deletion``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from agent_ng.persistence.load_memo import MemoSerializer
from agent_ng.persistence.replica import REPLICA_ID
from agent_ng.persistence.retention import Retention, retain
from agent_ng.persistence.run_deletion import RunDeletingMemorySaver
from agent_ng.persistence.sqlite_saver import SqliteSaver
from agent_ng.persistence.sqlite_turns import WriteTurns
from agent_ng.persistence.thread_lock import FileThreadLocks, PostgresThreadLocks, attach
from agent_ng.settings import Settings

SETUP_LOCK_KEY = 0x6167656E746E68
"""Advisory lock that serialises ``setup()`` (table creation) across replicas starting together
(its own key: versions before ``set_up`` blocked on the previous one, which can deadlock with
the migrations, see ``set_up``)."""

SQLITE_SYNCHRONOUS = "NORMAL"
"""The saver runs SQLite in WAL mode, where NORMAL keeps every commit through a crash of the
process and skips the fsync per commit that FULL (the default) pays: each step and each batch
of finished tools' results (``agent_ng.persistence.sqlite_saver``) is a commit of its own, and
FULL made 16 parallel tools wait on 16 fsyncs in a row (bench/README.md, parallel). Only an OS
crash or power loss can lose the last commits."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a write waits for another process's write on the same file before "database is
locked": WAL lets readers run beside one writer, and writers take turns (each commit is short)."""


@asynccontextmanager
async def open_checkpointer(
    url: str,
    *,
    pool_size: int = 10,
    retention: Retention | None = None,
    lock_url: str | None = None,
    timeout_s: float | None = None,
) -> AsyncIterator[BaseCheckpointSaver]:
    """The saver ``url`` names, its tables set up, with the thread locks and background pruning
    of its kind; a checkpoint loaded again within a run is deserialized once (``MemoSerializer``)."""
    async with _opened(url, pool_size, retention, lock_url, timeout_s) as saver:
        saver.serde = MemoSerializer()
        yield saver


@asynccontextmanager
async def _opened(
    url: str, pool_size: int, retention: Retention | None, lock_url: str | None, timeout_s: float | None
) -> AsyncIterator[BaseCheckpointSaver]:
    scheme, _, rest = url.partition("://")
    if scheme == "memory":
        yield RunDeletingMemorySaver()
        return
    if retention is None or lock_url is None or timeout_s is None:
        settings = Settings()
        retention = retention or Retention.from_settings(settings)
        lock_url = lock_url if lock_url is not None else settings.checkpoint_lock_url
        timeout_s = timeout_s or settings.checkpoint_timeout_s
    if scheme == "sqlite":
        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        async with SqliteSaver.from_conn_string(path) as saver:
            await saver.conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if path != ":memory:":
                attach(saver, FileThreadLocks(Path(f"{path}.locks")))
                saver.write_turns = WriteTurns(Path(f"{path}.writes.lock"))
            try:
                async with saver.write_turn():
                    await saver.setup()  # processes opening a new file together: one turns it to WAL
                await saver.conn.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
                async with retain(saver, retention):
                    yield saver
            finally:
                if saver.write_turns is not None:
                    saver.write_turns.close()
    elif scheme in ("postgresql", "postgres"):
        async with (
            postgres_saver(url, pool_size, lock_url or url, timeout_s) as saver,
            retain(saver, retention),
        ):
            yield saver
    else:
        raise ValueError(
            f"unsupported checkpoint URL {url!r}: use memory://, sqlite:///path.db "
            "or postgresql://user@host/db"
        )


@asynccontextmanager
async def postgres_saver(
    url: str, pool_size: int, lock_url: str, timeout_s: float
) -> AsyncIterator[BaseCheckpointSaver]:
    """An ``AsyncPostgresSaver`` on a connection pool, set up once, with advisory thread locks.

    No prepared statements (``prepare_threshold=None``): a transaction pooler hands each
    transaction to any server connection, where a statement prepared on another does not exist.
    A lost connection costs one retried operation, and each operation at most ``timeout_s``
    (``agent_ng.persistence.pg_reconnect``); connecting and waiting for a pool connection are
    bounded by it too. The thread locks need a session, so they go to ``lock_url``. Every
    connection names this replica in its ``application_name`` (``application_name_of``), so a
    replica taking over its runs can end them.
    """
    try:
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        from agent_ng.persistence.pg_reconnect import ReconnectingPostgresSaver, connect_timeout
        from agent_ng.persistence.run_table import application_name_of
    except ImportError as e:
        raise RuntimeError(
            "a postgresql:// checkpoint URL needs the postgres extra: "
            "pip install 'agent-ng[postgres]'"
        ) from e

    connection = {
        "autocommit": True,
        "prepare_threshold": None,
        "row_factory": dict_row,
        "connect_timeout": connect_timeout(timeout_s),
        "application_name": application_name_of(REPLICA_ID),
    }
    async with AsyncConnectionPool(
        url, min_size=1, max_size=pool_size, kwargs=connection, open=False, timeout=timeout_s
    ) as pool:
        saver = ReconnectingPostgresSaver(pool, timeout_s=timeout_s)
        locks = PostgresThreadLocks(lock_url, timeout_s)
        try:
            await set_up(saver, await locks.session())
            attach(saver, locks)
            yield saver
        finally:
            await locks.close()


async def set_up(saver: BaseCheckpointSaver, session: Any) -> None:
    """Run the saver's migrations once, however many replicas start together.

    The lock is a session lock taken with ``pg_try_advisory_lock``, and the others poll it:
    the migrations' ``CREATE INDEX CONCURRENTLY`` waits for every transaction older than it,
    so a replica blocked in ``pg_advisory_lock``, or a lock held by an open transaction, would
    wait for the migrating replica while it waits for them, forever.
    """
    delay_s = 0.05
    while not (await (await session.execute("SELECT pg_try_advisory_lock(%s)", (SETUP_LOCK_KEY,))).fetchone())[0]:
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, 1.0)
    try:
        await saver.setup()
    finally:
        await session.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db`` (SQLAlchemy's form)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"a SQLite checkpoint URL looks like sqlite:///path.db, got {url!r}")
    return url[len(prefix):]
