"""A PostgreSQL checkpointer that survives a lost connection with one retry, and fails fast.

Behind PgBouncer (or across a database failover) every connection in the pool can break at
once: a pooler restart closes them all. ``ReconnectingPostgresSaver`` turns that into at most one
retried operation: when an operation fails because its connection is gone, it has the pool test
its idle connections (``AsyncConnectionPool.check``: broken ones are replaced) and runs the
operation once more. Every retried operation is idempotent: ``aput`` and ``aput_writes`` are
upserts, the deletions delete what is still there, the others read, so a write that reached the
database before the connection dropped is written again unchanged and no checkpoint is lost. Any
other error is raised as before. It also deletes one run's checkpoints (``adelete_for_runs``,
``agent_ng.persistence.run_deletion``), as ``multitask_strategy="rollback"`` asks.

A database that cannot be reached, or does not answer (a dropped network keeps a query waiting
for ever), costs at most ``timeout_s`` per operation, retry included (``within``): the operation
then raises ``CheckpointUnavailableError``, one line naming the database, and the next one tries
again, so the service recovers as soon as the database is back.

A write made under a fence (``agent_ng.persistence.fencing.FENCE``, set by the replica holding
the run) is fenced: ``aput``, ``aput_writes``, ``adelete_thread`` and ``adelete_for_runs`` then
run in one transaction that first checks the run's record still names the fence's holder and
attempt (``FENCE_SQL``, which keeps the record ``FOR SHARE``: no takeover can claim the run
until the write has committed, and a write waits for a takeover under way, then sees it) and
raises ``FencedError`` without writing anything when it does not. Everything is
transaction-local, so it works through a transaction pooler. Reads are never fenced, and
without a fence a write is exactly as before. ``FencedError`` is not a lost connection: it is
never retried.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any, TypeVar

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from agent_ng.persistence.fencing import FENCE, FENCE_SQL, Fence, FencedError
from agent_ng.persistence.run_deletion import blocking, delete_postgres_runs
from agent_ng.persistence.unavailable import CheckpointUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECTION_LOST = ("08", "57P")
"""SQLSTATE classes of a lost connection: connection exception, operator intervention (shutdown)."""

_WRITING: ContextVar[Fence | None] = ContextVar("agent_ng_fenced_write", default=None)
"""The fence of the write this task is making (set by the write methods only: reads stay unfenced)."""


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` means the connection is gone (worth one retry), not that the statement failed."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    return error.sqlstate is None or error.sqlstate.startswith(CONNECTION_LOST)


def database_named(url: str) -> str:
    """How errors name the database at ``url`` (its address, never its credentials)."""
    info = conninfo_to_dict(url)
    return f"the checkpoint database (PostgreSQL at {info.get('host', 'localhost')}:{info.get('port', 5432)})"


def connect_timeout(timeout_s: float) -> int:
    """libpq's ``connect_timeout``: whole seconds, at least 2 (it treats less as 2)."""
    return max(2, math.ceil(timeout_s))


async def within(timeout_s: float, operation: Callable[[], Awaitable[T]], database: str) -> T:
    """``operation``'s result, or ``CheckpointUnavailableError`` once ``timeout_s`` have passed.

    The error comes at once; the operation is cancelled and left to finish behind: psycopg
    then cancels the query and drops the connection, which takes seconds more against a
    database that does not answer.
    """
    task = asyncio.ensure_future(operation())
    task.add_done_callback(_retrieved)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise CheckpointUnavailableError(f"{database} did not answer within {timeout_s:g} s")
    return task.result()


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def unreachable(database: str, error: BaseException) -> CheckpointUnavailableError:
    """A connection failure as the one-line error that names the database."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return CheckpointUnavailableError(f"{database} is unreachable: {reason}")


async def once_more(
    operation: Callable[[], Awaitable[T]],
    recover: Callable[[BaseException], Awaitable[None]],
    timeout_s: float,
    database: str,
    *,
    repeatable: bool = True,
) -> T:
    """``operation`` within ``timeout_s``. After a lost connection ``recover`` runs (the pool
    replaces its broken connections), then the operation once more if ``repeatable``; a second
    loss, or a first one of an operation that may have taken effect, is ``CheckpointUnavailableError``."""

    async def attempt() -> T:
        try:
            return await operation()
        except psycopg.OperationalError as e:
            if not connection_lost(e):
                raise
            await recover(e)
            if not repeatable:
                raise unreachable(database, e) from e
        try:
            return await operation()
        except psycopg.OperationalError as e:
            if connection_lost(e):
                raise unreachable(database, e) from e
            raise

    return await within(timeout_s, attempt, database)


class ReconnectingPostgresSaver(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` that runs an operation once more after a lost connection, each
    operation bounded by ``timeout_s``."""

    retried: int = 0
    """Operations this saver ran a second time after a lost connection."""

    def __init__(self, conn: Any, *, timeout_s: float, **kwargs: Any) -> None:
        super().__init__(conn, **kwargs)
        self.timeout_s = timeout_s
        self.database = database_named(conn.conninfo)

    async def _recover(self, error: BaseException) -> None:
        self.retried += 1
        log.warning("checkpointer lost its connection (%s); retrying once", str(error).strip())
        await self.conn.check()

    async def _once_more(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation``, retried once after a lost connection, all within ``timeout_s``."""
        return await once_more(operation, self._recover, self.timeout_s, self.database)

    async def guarded(self, operation: Callable[[], Awaitable[T]]) -> T:
        """One's own database operation on this saver's pool, retried and bounded as its own are."""
        return await self._once_more(operation)

    async def _write(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation`` (a write) as ``_once_more`` runs it, fenced when ``FENCE`` is set."""
        fence = FENCE.get()
        if fence is None:
            return await self._once_more(operation)
        writing = _WRITING.set(fence)
        try:
            return await self._once_more(operation)
        finally:
            _WRITING.reset(writing)

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[Any]:
        """The library's cursor; for a fenced write, one in a transaction that passed the fence."""
        fence = _WRITING.get()
        if fence is None:
            async with super()._cursor(pipeline=pipeline) as cur:
                yield cur
            return
        async with (
            self.lock,
            self.conn.connection() as conn,
            conn.pipeline() if self.supports_pipeline else nullcontext(),
            conn.transaction(),
            conn.cursor(binary=True, row_factory=dict_row) as cur,
        ):
            await passed(cur, fence)
            yield cur

    async def aget_tuple(self, config: Any) -> Any:
        return await self._once_more(lambda: super(ReconnectingPostgresSaver, self).aget_tuple(config))

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return await self._write(
            lambda: super(ReconnectingPostgresSaver, self).aput(config, checkpoint, metadata, new_versions)
        )

    async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        await self._write(
            lambda: super(ReconnectingPostgresSaver, self).aput_writes(config, writes, task_id, task_path)
        )

    async def adelete_thread(self, thread_id: str) -> None:
        await self._write(lambda: super(ReconnectingPostgresSaver, self).adelete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        run_ids = list(run_ids)
        fence = FENCE.get()
        if fence is None:
            await self._once_more(lambda: delete_postgres_runs(self, run_ids))
            return

        async def fenced_delete() -> None:
            async with self.conn.connection() as conn, conn.transaction(), conn.cursor() as cur:
                await passed(cur, fence)
                await delete_postgres_runs(SimpleNamespace(conn=OnConnection(conn)), run_ids)

        await self._once_more(fenced_delete)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        blocking(self, lambda: self.adelete_for_runs(run_ids))

    async def alist(self, config: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Read whole before the first is yielded (the rows are all fetched first anyway), so
        the deadline and the retry cover the read."""
        listed = super().alist
        for item in await self._once_more(lambda: collected(listed(config, **kwargs))):
            yield item


async def passed(cur: Any, fence: Fence) -> None:
    """Check ``fence`` in ``cur``'s transaction (keeping the run's record ``FOR SHARE`` until it
    ends); ``FencedError`` when the record no longer names its holder and attempt."""
    await cur.execute(FENCE_SQL, (fence.run_id, fence.holder, fence.attempt))
    if await cur.fetchone() is None:
        raise FencedError(fence.run_id, fence.attempt)


class OnConnection:
    """A pool that hands out one connection, already in a transaction: ``delete_postgres_runs``
    on it runs inside that transaction (its own becomes a savepoint)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """The one connection."""
        yield self._conn


async def collected(items: AsyncIterator[T]) -> list[T]:
    """Every item, read in one awaitable (one that ``within`` can bound)."""
    return [item async for item in items]
